from tests.api.support import api, vault

__all__ = ["api", "vault"]
