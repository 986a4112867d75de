"""PyGorse 0.5.1 (the Gorse project's own Python client, sync and async) against a real
`cascade serve`: every client method, round trips byte for byte, paging to the end, search,
accumulate vs overwrite, write-back moving on to new items, offset paging, category filters,
hidden items never recommended, deletes, and API keys mapped onto Cascade's roles."""

import asyncio
import time

import pytest
import requests
from gorse import AsyncGorse, Gorse, GorseException

from conftest import READ_KEY, WRITE_KEY


def poll(fetch, ok, timeout=10.0):
    """`fetch()` until `ok(value)` (the suggestion index follows the catalog within a tick)."""
    deadline = time.time() + timeout
    while True:
        v = fetch()
        if ok(v) or time.time() > deadline:
            return v
        time.sleep(0.1)


def status(call):
    with pytest.raises(GorseException) as e:
        call()
    return e.value.status_code


def all_pages(fetch, n):
    rows, cursor, pages = [], "", 0
    while True:
        page, cursor = fetch(n, cursor)
        rows += page
        pages += 1
        assert pages < 1000, "paging never ends"
        if cursor == "":
            return rows, pages


def test_users_round_trip_page_to_the_end_and_delete(server):
    g = Gorse(server, WRITE_KEY)
    u = {"UserId": "py-user-1", "Labels": ["jazz", "films"], "Comment": "first"}
    assert g.insert_user(u) == {"RowAffected": 1}
    assert g.get_user("py-user-1") == u
    more = [{"UserId": f"py-user-{k}", "Labels": {"tier": k}, "Comment": ""} for k in (2, 3, 4)]
    assert g.insert_users(more) == {"RowAffected": 3}
    assert g.get_user("py-user-3") == more[1]
    # Keys match case-insensitively, as Gorse's decoder does.
    assert g.insert_user({"userid": "py-user-5", "COMMENT": "lower"}) == {"RowAffected": 1}
    assert g.get_user("py-user-5") == {"UserId": "py-user-5", "Labels": None, "Comment": "lower"}
    rows, pages = all_pages(g.get_users, 7)
    ids = [r["UserId"] for r in rows]
    assert len(ids) == len(set(ids)), "no user twice"
    assert {"u0", "u79", "py-user-1", "py-user-4", "py-user-5"} <= set(ids)
    assert pages == -(-len(ids) // 7)
    assert status(lambda: g.get_user("nobody-here")) == 404
    assert status(lambda: g.insert_user({"UserId": "bad", "Labels": [1, "a"]})) == 400
    assert g.delete_user("py-user-5") == {"RowAffected": 1}
    assert status(lambda: g.get_user("py-user-5")) == 404
    assert g.delete_user("py-user-5") == {"RowAffected": 1}, "as Gorse: deleting twice is fine"


def test_items_round_trip_update_search_page_and_delete(server):
    g = Gorse(server, WRITE_KEY)
    it = {
        "ItemId": "py-item-1", "IsHidden": False, "Categories": ["Sports", "Gorse"],
        "Timestamp": "2026-11-01T10:00:00Z", "Labels": {"lang": "fr"},
        "Comment": "Zebra Racing Championship",
    }
    assert g.insert_item(it) == {"RowAffected": 1}
    assert g.get_item("py-item-1") == it, "a UTC timestamp comes back byte for byte"
    # Gorse's other timestamp formats in, RFC 3339 out.
    g.insert_item({"ItemId": "py-item-2", "Categories": ["Gorse"],
                   "Timestamp": "2026-11-02 08:30:00", "Comment": "Quokka Valley"})
    assert g.get_item("py-item-2")["Timestamp"] == "2026-11-02T08:30:00Z"
    assert g.update_item("py-item-2", comment="Quokka Valley Revisited", labels=["x"]) == {
        "RowAffected": 1}
    got = g.get_item("py-item-2")
    assert (got["Comment"], got["Labels"], got["Categories"]) == (
        "Quokka Valley Revisited", ["x"], ["Gorse"])
    assert g.update_item("py-item-2", is_hidden=True)["RowAffected"] == 1
    assert g.get_item("py-item-2")["IsHidden"] is True
    found = poll(lambda: [x["ItemId"] for x in g.search_items("zebra", n=5)],
                 lambda ids: "py-item-1" in ids)
    assert "py-item-1" in found
    assert all("Quokka" not in x["Comment"] for x in g.search_items("quokka", n=5)), \
        "a hidden item is never found"
    rows, _ = all_pages(g.get_items, 64)
    ids = [r["ItemId"] for r in rows]
    assert len(ids) == len(set(ids))
    assert {"i0", "i399", "py-item-1", "py-item-2"} <= set(ids)
    # PyGorse has no bulk item insert; Gorse's route is there.
    r = requests.post(f"{server}/api/items", headers={"X-API-Key": WRITE_KEY},
                      json=[{"ItemId": f"py-bulk-{k}", "Comment": f"Bulk {k}"} for k in range(3)])
    assert (r.status_code, r.json()) == (200, {"RowAffected": 3})
    assert g.get_item("py-bulk-2")["Comment"] == "Bulk 2"
    assert g.delete_item("py-item-2") == {"RowAffected": 1}
    assert status(lambda: g.get_item("py-item-2")) == 404
    assert status(lambda: g.insert_item({"ItemId": "bad", "Timestamp": "last tuesday"})) == 400


def test_feedback_accumulates_on_post_overwrites_on_put_pages_and_deletes(server):
    g = Gorse(server, WRITE_KEY)
    t0 = "2026-11-03T09:00:00Z"
    assert g.insert_feedback("star", "py-fb", "i10", t0, value=2) == {"RowAffected": 1}
    assert g.insert_feedback("star", "py-fb", "i10", "2026-11-03T10:00:00Z", value=3) == {
        "RowAffected": 1}
    [rec] = g.list_feedbacks("star", "py-fb")
    assert (rec["FeedbackType"], rec["UserId"], rec["ItemId"]) == ("star", "py-fb", "i10")
    assert rec["Value"] == pytest.approx(5), "POST accumulates"
    assert (rec["Timestamp"], rec["Updated"]) == (t0, "2026-11-03T10:00:00Z")
    r = requests.put(f"{server}/api/feedback", headers={"X-API-Key": WRITE_KEY}, json=[
        {"FeedbackType": "star", "UserId": "py-fb", "ItemId": "i10", "Value": 1,
         "Timestamp": "2026-11-04T00:00:00Z"}])
    assert (r.status_code, r.json()) == (200, {"RowAffected": 1})
    [rec] = g.list_feedbacks("star", "py-fb")
    assert rec["Value"] == pytest.approx(1), "PUT overwrites"
    assert rec["Timestamp"] == "2026-11-04T00:00:00Z"
    assert g.insert_feedbacks([
        {"FeedbackType": "read", "UserId": "py-fb", "ItemId": "i11", "Timestamp": t0},
        {"FeedbackType": "read", "UserId": "py-fb", "ItemId": "i12", "Timestamp": t0},
        # Future-dated feedback is kept but not listed until its time comes, as in Gorse.
        {"FeedbackType": "read", "UserId": "py-fb", "ItemId": "i13",
         "Timestamp": "2099-01-01T00:00:00Z"},
    ]) == {"RowAffected": 3}
    assert sorted(x["ItemId"] for x in g.list_feedbacks("read", "py-fb")) == ["i11", "i12"]
    assert [x["ItemId"] for x in g.list_feedbacks("star>=1", "py-fb")] == ["i10"]
    assert g.list_feedbacks("star>1", "py-fb") == []
    r = requests.get(f"{server}/api/user/py-fb/feedback", headers={"X-API-Key": WRITE_KEY})
    assert sorted((x["FeedbackType"], x["ItemId"]) for x in r.json()) == [
        ("like", "i10"), ("read", "i11"), ("read", "i12")], "star is a like; named by its list"
    rows, pages = all_pages(g.get_feedbacks, 1000)
    keys = [(x["FeedbackType"], x["UserId"], x["ItemId"]) for x in rows]
    assert len(keys) == len(set(keys)) and pages >= 2
    assert ("read", "py-fb", "i11") in keys
    assert status(lambda: g.insert_feedback("teleport", "py-fb", "i10", t0)) == 400
    assert g.delete_feedback("py-fb", "i11") == {"RowAffected": 1}
    assert [x["ItemId"] for x in g.list_feedbacks("read", "py-fb")] == ["i12"]
    assert g.delete_feedback("py-fb", "i11") == {"RowAffected": 0}


def test_recommendations_page_by_offset_filter_by_category_and_never_hidden(server):
    g = Gorse(server, READ_KEY)
    w = Gorse(server, WRITE_KEY)
    full = g.get_recommend("u3", n=9)
    assert len(full) == 9 and all(isinstance(s.score, float) for s in full)
    ids = [s.id for s in full]
    pages = [[s.id for s in g.get_recommend("u3", n=3, offset=k)] for k in (0, 3, 6)]
    assert sum(pages, []) == ids, "offsets page through one list"
    sports = g.get_recommend("u3", category="Sports", n=5)
    assert sports and all("Sports" in w.get_item(s.id)["Categories"] for s in sports)
    r = requests.get(f"{server}/api/recommend/u3", headers={"X-API-Key": READ_KEY},
                     params=[("category", "Sports"), ("category", "Comedy"), ("n", "5")])
    assert r.status_code == 200 and all(isinstance(x, str) for x in r.json()), "ids without v2"
    assert all({"Sports", "Comedy"} <= set(w.get_item(x)["Categories"]) for x in r.json()), \
        "categories are ANDed"
    victim = ids[0]
    assert w.update_item(victim, is_hidden=True)["RowAffected"] == 1
    for n in (5, 20):
        assert victim not in [s.id for s in g.get_recommend("u3", n=n)]
    assert victim not in [s.id for s in g.get_recommend("u4", n=50)]
    assert status(lambda: g.get_recommend("u3", n=3, write_back_type="read",
                                           write_back_delay="soon")) == 400


def test_write_back_moves_on_to_new_items_and_a_delay_defers_it(server):
    g = Gorse(server, WRITE_KEY)
    first = [s.id for s in g.get_recommend("u5", n=5, write_back_type="read")]
    second = [s.id for s in g.get_recommend("u5", n=5, write_back_type="read")]
    assert len(first) == len(second) == 5
    assert not set(first) & set(second), "what was written back is not recommended again"
    read = {x["ItemId"] for x in g.list_feedbacks("read", "u5")}
    assert set(first) | set(second) <= read
    later = [s.id for s in g.get_recommend("u6", n=4, write_back_type="read",
                                           write_back_delay="10m")]
    assert [s.id for s in g.get_recommend("u6", n=4)] == later, "not before the delay passes"


def test_session_neighbors_latest_and_non_personalized(server):
    g = Gorse(server, READ_KEY)
    h = {"X-API-Key": READ_KEY}
    pop = requests.get(f"{server}/api/non-personalized/popular?n=5", headers=h).json()
    assert len(pop) == 5 and all(set(x) == {"Id", "Score"} for x in pop)
    top = pop[0]["Id"]
    nb = g.get_neighbors(top, n=5)
    assert 0 < len(nb) <= 5 and top not in [x["Id"] for x in nb]
    assert [x["Id"] for x in g.get_neighbors(top, n=2, offset=1)] == [x["Id"] for x in nb[1:3]]
    sess = g.session_recommend(
        [{"FeedbackType": "star", "UserId": "", "ItemId": top, "Timestamp": "2026-11-05T00:00:00Z"}],
        n=5)
    assert 0 < len(sess) <= 5 and top not in [x["Id"] for x in sess]
    assert g.session_recommend([], n=5) is None, "nothing to go on: null, as Gorse"
    latest = requests.get(f"{server}/api/latest?n=3", headers=h).json()
    assert len(latest) == 3 and [x["Score"] for x in latest] == sorted(
        (x["Score"] for x in latest), reverse=True)
    # Trending compares the last hours with the last week: the generated world is older.
    trending = requests.get(f"{server}/api/non-personalized/trending?n=3", headers=h)
    assert trending.status_code == 200 and len(trending.json()) <= 3
    assert requests.get(f"{server}/api/non-personalized/nope", headers=h).json() == []
    assert status(lambda: g.get_neighbors("no-such-item")) == 404


def test_api_keys_map_onto_roles_and_health_needs_none(server):
    assert status(lambda: Gorse(server, "wrong-key-123").get_user("u0")) == 401
    assert status(lambda: Gorse(server, READ_KEY).get_user("u0")) == 403, \
        "reading data back takes the data key"
    assert len(Gorse(server, READ_KEY).get_recommend("u0", n=1)) == 1
    live = requests.get(f"{server}/api/health/live")
    assert live.status_code == 200 and live.json()["Ready"] is True
    assert requests.get(f"{server}/api/health/ready/").status_code == 200, "a trailing slash too"


def test_the_async_client_drives_every_method(server):
    async def main():
        a = AsyncGorse(server, WRITE_KEY)
        assert await a.insert_user({"UserId": "py-async", "Labels": None, "Comment": "a"}) == {
            "RowAffected": 1}
        assert await a.insert_users([{"UserId": "py-async-2"}]) == {"RowAffected": 1}
        assert (await a.get_user("py-async"))["Comment"] == "a"
        users, cursor = await a.get_users(1000, "")
        assert "py-async-2" in [u["UserId"] for u in users] and cursor == ""
        item = {"ItemId": "py-async-item", "IsHidden": False, "Categories": ["Gorse"],
                "Timestamp": "2026-11-06T00:00:00Z", "Labels": None, "Comment": "Axolotl Nights"}
        assert await a.insert_item(item) == {"RowAffected": 1}
        assert await a.get_item("py-async-item") == item
        assert await a.update_item("py-async-item", categories=["Gorse", "Async"]) == {
            "RowAffected": 1}
        items, _ = await a.get_items(1000, "")
        assert ["Gorse", "Async"] in [i["Categories"] for i in items if i["ItemId"] == "py-async-item"]
        deadline = time.time() + 10
        while time.time() < deadline:
            if "py-async-item" in [x["ItemId"] for x in await a.search_items("axolotl", 5)]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("search never found the item")
        assert await a.insert_feedback("like", "py-async", "py-async-item",
                                       "2026-11-06T01:00:00Z") == {"RowAffected": 1}
        assert await a.insert_feedbacks([{"FeedbackType": "read", "UserId": "py-async",
                                          "ItemId": "i20", "Timestamp": "2026-11-06T02:00:00Z"}]) \
            == {"RowAffected": 1}
        assert [x["ItemId"] for x in await a.list_feedbacks("like", "py-async")] == ["py-async-item"]
        fb, cursor = await a.get_feedbacks(10, "")
        assert len(fb) == 10 and cursor != ""
        recs = await a.get_recommend("py-async", n=3)
        assert len(recs) == 3 and "py-async-item" not in [s.id for s in recs]
        pop = await a.session_recommend([{"FeedbackType": "like", "UserId": "py-async",
                                          "ItemId": "i20", "Timestamp": "2026-11-06T02:00:00Z"}], 3)
        assert pop is None or "i20" not in [x["Id"] for x in pop]
        top = recs[0].id
        assert isinstance(await a.get_neighbors(top, 3), list)
        assert await a.delete_feedback("py-async", "i20") == {"RowAffected": 1}
        assert await a.delete_item("py-async-item") == {"RowAffected": 1}
        assert await a.delete_user("py-async") == {"RowAffected": 1}
        with pytest.raises(GorseException) as e:
            await a.get_user("py-async")
        assert e.value.status_code == 404
    asyncio.run(main())
