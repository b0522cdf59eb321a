from tests.api.support import api, uploader, vault

__all__ = ["api", "uploader", "vault"]
