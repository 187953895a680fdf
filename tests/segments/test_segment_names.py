"""A segment's name is saved and read without its surrounding blanks (``saveSegment(" vip
")`` stores "vip", ``segment(" vip ")`` finds it); deleting it by the same name the
writer saved it under deletes it, rather than answering NOT_FOUND and leaving it."""

from __future__ import annotations

import uuid

import httpx

from tests.gql_client import gql

SAVE = """mutation($name: String!) {
  saveSegment(name: $name, filter: {all: []}) { name }
}"""
READ = "query($name: String!) { segment(name: $name) { name } }"
DELETE = "mutation($name: String!) { deleteSegment(name: $name) }"


async def test_a_segment_saved_under_a_padded_name_is_deleted_by_it(
    client: httpx.AsyncClient,
) -> None:
    name = f"vip {uuid.uuid4().hex[:8]}"
    padded = f" {name} "
    saved = await gql(client, SAVE, name=padded)
    assert saved["data"]["saveSegment"]["name"] == name
    assert (await gql(client, READ, name=padded))["data"]["segment"]["name"] == name
    deleted = await gql(client, DELETE, name=padded)
    assert deleted.get("data") == {"deleteSegment": True}, deleted
    assert (await gql(client, READ, name=name))["data"]["segment"] is None
