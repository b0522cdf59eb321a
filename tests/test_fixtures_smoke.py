import asyncpg


async def test_servers_start(js, database_url, s3_server):
    info = await js.stream_info("RECORDINGS")
    assert info.config.name == "RECORDINGS"
    conn = await asyncpg.connect(database_url)
    assert await conn.fetchval("select 1") == 1
    await conn.close()
    s3 = s3_server.client()
    s3.create_bucket(Bucket="abc")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["abc"]
