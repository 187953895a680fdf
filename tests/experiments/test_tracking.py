"""The tracking parameter: what a signed link names is read back exactly, whatever the
link already holds; a tampered, truncated or foreign-keyed one names nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.experiments.tracking import PARAMETER, Tracked, Tracker, new_list_id

TRACKER = Tracker(b"a tracking key for the tests, 32+")
URLS = st.sampled_from(
    [
        "https://shop.example/products/linen-shirt-7",
        "https://shop.example/p?id=7&utm_source=esp",
        "https://shop.example/p/7#reviews",
        "https://shop.example/p?x=1#top",
        "http://localhost:8103/products/a%20b",
    ]
)


@settings(max_examples=200, deadline=None)
@given(URLS, st.integers(0, 255))
def test_a_tagged_link_names_its_list_and_position(url: str, position: int) -> None:
    list_id = new_list_id()
    tagged = TRACKER.tag_url(url, list_id, position)
    assert TRACKER.read(tagged) == Tracked(list_id, position)
    # The link itself still leads where it led: its path, query and fragment are kept.
    assert tagged.split("#")[0].startswith(url.split("#")[0])
    assert tagged.endswith("#" + url.split("#")[1]) if "#" in url else "#" not in tagged


def test_the_parameter_is_short() -> None:
    token = TRACKER.token(new_list_id(), 3)
    assert len(new_list_id()) == 16
    assert len(token) == 30
    assert token[:28].replace("-", "").replace("_", "").isalnum()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 27), st.sampled_from("AQgw-_"))
def test_any_changed_character_of_the_signed_part_is_refused(at: int, replacement: str) -> None:
    token = TRACKER.token(new_list_id(), 5)
    changed = token[:at] + replacement + token[at + 1 :]
    found = TRACKER.read(f"https://shop.example/p?{PARAMETER}={changed}")
    assert found is None or changed == token


def test_an_edited_position_names_nothing() -> None:
    """The position is signed: edited, the link names no item (not even another of the
    same list), and a position in the wrong form is refused before any MAC."""
    list_id = new_list_id()
    token = TRACKER.token(list_id, 1)
    assert TRACKER.read(f"https://x/p?{PARAMETER}={token}") == Tracked(list_id, 1)
    for other in range(256):
        if other != 1:
            edited = f"{token.partition('.')[0]}.{other}"
            assert TRACKER.read(f"https://x/p?{PARAMETER}={edited}") is None
    for bad in ("256", "-1", "", "1x", "0001", "01", "\u00b9", "\u0661", "\uff11", " 1", "1 "):
        assert TRACKER.read(f"https://x/p?{PARAMETER}={token[:-2]}.{bad}") is None
        assert TRACKER.read(f"https://x/p?{PARAMETER}={quote(token[:-2] + '.' + bad)}") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=6), st.integers(0, 255))
def test_any_position_text_names_the_signed_one_or_nothing_and_never_fails(
    position: str, signed: int
) -> None:
    """Whatever an ESP reports after the dot (a recipient's edit, another script's
    digits), reading names the signed position only for its own spelling, and never
    raises: one click that did failed its whole batch."""
    list_id = new_list_id()
    token = TRACKER.token(list_id, signed).partition(".")[0]
    found = TRACKER.read(f"https://x/p?{PARAMETER}={quote(token + '.' + position)}")
    assert found is None or (found == Tracked(list_id, signed) and position == str(signed))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(URLS, st.none(), st.just("")), min_size=1, max_size=40))
def test_a_list_signed_at_once_reads_back_item_by_item(urls: list[str | None]) -> None:
    """``links`` (the serving path: one MAC per seven items, one string a plain link)
    tags each link as ``tag_url`` does, whatever the link holds, and each reads back as
    its own item; an item without a URL gets no link."""
    list_id = new_list_id()
    links = TRACKER.links(list_id, urls)
    assert links == [TRACKER.tag_url(u, list_id, p) if u else None for p, u in enumerate(urls)]
    signed = {link.split(f"{PARAMETER}=")[1][:28] for link in links if link}
    assert len(signed) == sum(map(bool, urls))  # a tag per position
    for position, link in enumerate(links):
        if link:
            assert TRACKER.read(link) == Tracked(list_id, position)


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/p",
        f"https://shop.example/p?{PARAMETER}=",
        f"https://shop.example/p?{PARAMETER}=not-base64!",
        f"https://shop.example/p?{PARAMETER}=AAAA",
        f"https://shop.example/p?{PARAMETER}=AAAAAAAAAAAAAAAAAAAAAAAAAAAA.1",
        "https://[bad/p?gw_rec=x",
    ],
)
def test_links_without_a_valid_parameter_name_nothing(url: str) -> None:
    assert TRACKER.read(url) is None


def test_another_key_reads_nothing() -> None:
    tagged = TRACKER.tag_url("https://shop.example/p", new_list_id(), 1)
    assert Tracker(b"another key, of another gateway").read(tagged) is None


def test_an_encoded_link_as_an_esp_may_report_it_is_read() -> None:
    list_id = new_list_id()
    token = TRACKER.token(list_id, 2)
    url = f"https://shop.example/p?{PARAMETER}={quote(token, safe='')}&utm_medium=email"
    assert TRACKER.read(url) == Tracked(list_id, 2)


def test_positions_beyond_a_byte_are_refused() -> None:
    with pytest.raises(ValueError, match="position"):
        TRACKER.token(new_list_id(), 256)


def test_a_product_link_that_already_holds_a_tracked_parameter_names_the_list_served() -> None:
    """A catalogue's product URL copied from a tracked link (a valid parameter of an
    earlier list) is served in a new list: a click on it names the new list and
    position, not the earlier one's (the first parameter was read, so every click on
    that product was credited to the list it was copied from)."""
    earlier = new_list_id()
    copied = TRACKER.tag_url("https://shop.example/p?id=7", earlier, 0)
    served = new_list_id()
    link = TRACKER.links(served, ["https://shop.example/q", copied])[1]
    assert link is not None
    assert TRACKER.read(link) == Tracked(served, 1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(URLS, st.none(), st.just("")), min_size=1, max_size=20))
def test_lists_prepared_ahead_are_signed_as_made_one_at_a_time(urls: list[str | None]) -> None:
    """``new_list`` (serving: ids and their first eight links' parameters prepared 256
    at a time) gives what ``links`` gives for its id, a new id each list across
    batches, each link read back."""
    tracker = Tracker(b"a key of its own")
    made = [tracker.new_list(urls) for _ in range(300)]
    assert len({list_id for list_id, _ in made}) == 300
    for list_id, links in made:
        assert len(list_id) == 16
        assert links == tracker.links(list_id, urls)
        for position, link in enumerate(links):
            if link:
                assert tracker.read(link) == Tracked(list_id, position)


def test_lists_prepared_by_threads_at_once_are_each_signed_for_their_own_id() -> None:
    """Serving from several threads at once (a batch's arrays are the tracker's own,
    filled anew each batch): every list's links name that list, no id is served
    twice."""
    import threading

    tracker = Tracker(b"a key shared by threads")
    urls = ["https://shop.example/a", "https://shop.example/b", "https://shop.example/c"]
    made: list[tuple[str, list[str | None]]] = []
    start = threading.Barrier(4)

    def serve() -> None:
        start.wait()
        mine = [tracker.new_list(urls) for _ in range(2_000)]
        made.extend(mine)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads taking turns inside a batch, as they may
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switching)
    assert len({list_id for list_id, _ in made}) == len(made) == 8_000
    for list_id, links in made:
        assert links == tracker.links(list_id, urls)


def test_a_forked_child_serves_none_of_the_lists_its_parent_prepared() -> None:
    tracker = Tracker(b"a key shared by parent and child")
    tracker.new_list(["https://x/p"])  # the parent's batch prepared, one served
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(writer, tracker.new_list(["https://x/p"])[0].encode())
        os._exit(0)
    os.waitpid(child, 0)
    served_by_child = os.read(reader, 16).decode()
    served_by_parent = {tracker.new_list(["https://x/p"])[0] for _ in range(63)}
    assert served_by_child not in served_by_parent


def _v5_token(key: bytes, list_id: str, position: int) -> str:
    """A token as v5 signs it, made here from its description: the first 9 bytes of
    AES-256 (key: keyed BLAKE2b of "gw-rec-v5 AES key") of the list id's 12 bytes, the
    position's byte and "gw5". Pinned, so that a change of the layout or of the key's
    derivation, which would leave every link already sent unattributed, fails here."""
    aes_key = hashlib.blake2b(b"gw-rec-v5 AES key", key=key, digest_size=32).digest()
    block = base64.urlsafe_b64decode(list_id) + bytes((position,)) + b"gw5"
    sealed = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor().update(block)
    tag = base64.urlsafe_b64encode(sealed[:9]).decode()
    return f"{list_id}{tag}.{position}"


@pytest.mark.parametrize("position", [0, 1, 7, 8, 200, 255])
def test_a_tag_is_aes_of_the_list_and_position_as_documented(position: int) -> None:
    key = b"a tracking key for the tests, 32+"
    list_id = new_list_id()
    assert TRACKER.token(list_id, position) == _v5_token(key, list_id, position)
    if position < 8:  # the prepared parameters sign the same
        made, links = Tracker(key).new_list(["https://x/p"] * (position + 1))
        assert links[position] == f"https://x/p?{PARAMETER}={_v5_token(key, made, position)}"


def test_a_list_past_the_last_position_is_refused() -> None:
    with pytest.raises(ValueError, match="position"):
        TRACKER.new_list(["https://x/p"] * 257)


def _v4_token(key: bytes, list_id: str, position: int) -> str:
    """A token as v4 signed it (BLAKE2b of the list id, 63 bytes for seven positions),
    made here from its description, not by the gateway's code."""
    block, at = divmod(position, 7)
    mac = hashlib.blake2b(key=key, digest_size=63, person=b"gw-rec-v4")
    mac.update(f"{block}:{list_id}".encode())
    tags = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    return f"{list_id}{tags[at * 12 : at * 12 + 12]}.{position}"


@pytest.mark.parametrize("position", [0, 3, 6, 7, 12, 255])
def test_links_sent_before_the_aes_tags_are_still_read(position: int) -> None:
    """Links already in recipients' mailboxes were signed by v4: their clicks are still
    attributed after the upgrade, and an edited v4 position still names nothing."""
    key = b"a tracking key for the tests, 32+"
    list_id = new_list_id()
    token = _v4_token(key, list_id, position)
    assert TRACKER.read(f"https://shop.example/p?{PARAMETER}={token}") == Tracked(list_id, position)
    edited = f"{token.partition('.')[0]}.{(position + 1) % 256}"
    assert TRACKER.read(f"https://shop.example/p?{PARAMETER}={edited}") is None
    assert Tracker(b"another key").read(f"https://shop.example/p?{PARAMETER}={token}") is None


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=28, max_size=28), st.integers(0, 9))
def test_a_hostile_token_neither_fails_nor_disturbs_the_tags_made_after_it(
    signed: str, position: int
) -> None:
    """Whatever 28 characters a click carries, reading it answers nothing or a list,
    never raises, and leaves the cipher whole: a block of the wrong length held back by
    it would have shifted every tag the process made afterwards."""
    tracker = Tracker(b"a key for hostile tokens")
    before = tracker.links("AaJMHKXjZKRAqp5v", ["https://x/p"] * 9)
    tracker.read(f"https://x/p?{PARAMETER}={quote(signed + '.' + str(position))}")
    assert tracker.links("AaJMHKXjZKRAqp5v", ["https://x/p"] * 9) == before
    list_id, links = tracker.new_list(["https://x/p"] * 3)
    assert [tracker.read(link or "") for link in links] == [Tracked(list_id, p) for p in range(3)]


@pytest.mark.parametrize("count", range(11))
def test_plain_product_links_served_from_prepared_parameters_read_back(count: int) -> None:
    """A catalogue's usual links (no query, no fragment), up to eight served from the
    prepared parameters and beyond from the tags made for the rest: the same links as
    ``links``, each naming its list and position."""
    tracker = Tracker(b"a key for plain links")
    urls: list[str | None] = [f"https://shop.example/products/item-{n}" for n in range(count)]
    list_id, links = tracker.new_list(urls)
    assert links == tracker.links(list_id, urls)
    assert [tracker.read(link or "") for link in links] == [
        Tracked(list_id, position) for position in range(count)
    ]
    assert all(
        (link or "").startswith(f"{url}?{PARAMETER}={list_id}")
        for url, link in zip(urls, links, strict=True)
    )
