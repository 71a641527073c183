#!/usr/bin/env python3
"""Set Metabase up for the clickstream extension through its REST API.

Idempotent: every run brings Metabase to the same state and a second run
changes nothing (it only reads, after logging in).

  1. the first user (POST /api/setup), or a login (POST /api/session);
  2. the database "Clickstream" as the reader login (POST or PUT
     /api/database), schema clickstream only, then a schema sync;
  3. the collection "Clickstream" (POST /api/collection);
  4. one native question per block of questions.sql (POST or PUT /api/card);
  5. the dashboard "Clickstream" with every question on it, laid out in
     file order on a 24-column grid (POST /api/dashboard, PUT its cards);
  6. the marts' foreign keys, which Metabase cannot read from the schema
     (the marts have none), as field semantic types (PUT /api/field), once
     the sync has found the tables.

Settings come from the environment (docker-compose.yml sets them from .env):
MB_URL, MB_ADMIN_EMAIL, MB_ADMIN_PASSWORD, MB_DB_HOST, MB_DB_PORT,
MB_DB_NAME, MB_DB_USER, MB_DB_PASSWORD; optional MB_WAIT (seconds to wait
for Metabase, default 600) and MB_SYNC_WAIT (for the sync, default 300).
Python 3 standard library only.

  python3 setup.py [--questions FILE] [--reset-db-password]

Metabase shows database passwords as a placeholder, so a run cannot tell
whether the stored one is current: --reset-db-password sends it again.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

NAME = "Clickstream"
GRID_COLUMNS = 24

# (table, column) -> (table, column) it refers to
FOREIGN_KEYS = [
    (("product_daily", "product_id"), ("products", "product_id")),
    (("product_funnel", "product_id"), ("products", "product_id")),
    (("high_interest_low_conversion", "product_id"), ("products", "product_id")),
    (("orders", "user_id"), ("users", "user_id")),
    (("orders", "session_id"), ("sessions", "session_id")),
    (("sessions", "user_id"), ("users", "user_id")),
]

VISUALIZATION_KEYS = {
    "line": ("graph.dimensions", "graph.metrics"),
    "bar": ("graph.dimensions", "graph.metrics"),
    "row": ("graph.dimensions", "graph.metrics"),
    "area": ("graph.dimensions", "graph.metrics"),
    "pie": ("pie.dimension", "pie.metric"),
    "funnel": ("funnel.dimension", "funnel.metric"),
}


class ApiError(Exception):
    """An HTTP error answer of Metabase."""


class Api:
    """A Metabase client: JSON in and out, the session in a header."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.session = None
        self.writes = 0

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.session:
            req.add_header("X-Metabase-Session", self.session)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise ApiError(f"{method} {path}: HTTP {e.code}: {e.read().decode()[:500]}") from None
        if method != "GET" and path != "/api/session":
            self.writes += 1
        return json.loads(text) if text else None

    def get(self, path):
        return self.call("GET", path)


def listing(result):
    """The list of a listing endpoint: a plain list, or {"data": [...]}."""
    return result["data"] if isinstance(result, dict) else result


def read_questions(path):
    """The questions of questions.sql, in file order."""
    questions, current = [], None
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            header = re.match(r"^-- (\w+):\s*(.*)$", line)
            if header and (current is None or current["sql"] is None):
                if header.group(1) == "name":
                    current = {"sql": None}
                if current is not None:
                    current[header.group(1)] = header.group(2)
                continue
            if current is None or (current["sql"] is None and not line.strip()):
                continue
            current["sql"] = line if current["sql"] is None else current["sql"] + "\n" + line
            if line.rstrip().endswith(";"):
                current["sql"] = current["sql"].rstrip()[:-1].rstrip()
                questions.append(current)
                current = None
    names = [q["name"] for q in questions]
    if len(set(names)) != len(names):
        raise SystemExit("metabase setup: question names must be unique")
    return questions


def wait_until_up(api, seconds):
    deadline = time.time() + seconds
    while True:
        try:
            if api.get("/api/health").get("status") == "ok":
                return
        except (ApiError, urllib.error.URLError, ConnectionError, ValueError):
            pass
        if time.time() > deadline:
            raise SystemExit(f"metabase setup: {api.url} is not up after {seconds} s")
        time.sleep(3)


def log_in(api, env):
    """The first user on a new Metabase, else a login; sets api.session."""
    props = api.get("/api/session/properties")
    if not props.get("has-user-setup"):
        result = api.call("POST", "/api/setup", {
            "token": props["setup-token"],
            "user": {"first_name": "Clickstream", "last_name": "Admin",
                     "email": env["MB_ADMIN_EMAIL"], "password": env["MB_ADMIN_PASSWORD"]},
            "prefs": {"site_name": NAME, "site_locale": "en", "allow_tracking": False},
        })
        print("metabase setup: created the first user", env["MB_ADMIN_EMAIL"])
    else:
        result = api.call("POST", "/api/session", {"username": env["MB_ADMIN_EMAIL"],
                                                   "password": env["MB_ADMIN_PASSWORD"]})
    api.session = result["id"]


def ensure_database(api, env, reset_password):
    details = {"host": env["MB_DB_HOST"], "port": int(env["MB_DB_PORT"]),
               "dbname": env["MB_DB_NAME"], "user": env["MB_DB_USER"], "ssl": False,
               "schema-filters-type": "inclusion", "schema-filters-patterns": "clickstream"}
    found = [d for d in listing(api.get("/api/database")) if d.get("name") == NAME]
    if not found:
        db = api.call("POST", "/api/database", {"engine": "postgres", "name": NAME,
                                                "details": {**details, "password": env["MB_DB_PASSWORD"]}})
        print("metabase setup: added database", NAME)
    else:
        db = found[0]
        current = db.get("details") or {}
        if reset_password or db.get("engine") != "postgres" \
                or any(current.get(k) != v for k, v in details.items()):
            db = api.call("PUT", f"/api/database/{db['id']}",
                          {"engine": "postgres", "details": {**details, "password": env["MB_DB_PASSWORD"]}})
            print("metabase setup: updated database", NAME)
        else:
            return db["id"]
    api.call("POST", f"/api/database/{db['id']}/sync_schema", {})
    return db["id"]


def ensure_collection(api):
    for c in listing(api.get("/api/collection")):
        if c.get("name") == NAME and not c.get("archived") and c.get("personal_owner_id") is None \
                and isinstance(c.get("id"), int):
            return c["id"]
    c = api.call("POST", "/api/collection", {"name": NAME,
                                             "description": "Questions and dashboards over the clickstream gold marts."})
    print("metabase setup: created collection", NAME)
    return c["id"]


def card_sql(card):
    """The SQL of a native card, whatever the shape of its stored query."""
    q = card.get("dataset_query") or {}
    if "native" in q:
        return q["native"].get("query")
    for stage in q.get("stages") or []:  # pMBQL (newer Metabase)
        if "native" in stage:
            return stage["native"]
    return None


def card_database(card):
    q = card.get("dataset_query") or {}
    return q.get("database", card.get("database_id"))


def desired_card(question, db_id, collection_id):
    display = question.get("display", "table")
    settings = {}
    if display in VISUALIZATION_KEYS and question.get("x") and question.get("y"):
        dim_key, metric_key = VISUALIZATION_KEYS[display]
        metrics = [m.strip() for m in question["y"].split(",") if m.strip()]
        if dim_key.startswith("graph."):
            settings = {dim_key: [question["x"]], metric_key: metrics}
        else:
            settings = {dim_key: question["x"], metric_key: metrics[0]}
    card = {"name": question["name"], "display": display, "visualization_settings": settings,
            "collection_id": collection_id,
            "dataset_query": {"database": db_id, "type": "native",
                              "native": {"query": question["sql"], "template-tags": {}}}}
    if question.get("description"):
        card["description"] = question["description"]
    return card


def ensure_cards(api, questions, db_id, collection_id):
    items = listing(api.get(f"/api/collection/{collection_id}/items?models=card&models=dashboard"))
    existing = {i["name"]: i["id"] for i in items if i.get("model") == "card"}
    ids, counts = [], {"created": 0, "updated": 0, "unchanged": 0}
    for q in questions:
        want = desired_card(q, db_id, collection_id)
        if q["name"] not in existing:
            card = api.call("POST", "/api/card", want)
            counts["created"] += 1
        else:
            card = api.get(f"/api/card/{existing[q['name']]}")
            changes = {k: want[k] for k in ("display", "visualization_settings", "collection_id")
                       if card.get(k) != want[k]}
            if (card.get("description") or None) != want.get("description"):
                changes["description"] = want.get("description")
            if card_sql(card) != q["sql"] or card_database(card) != db_id:
                changes["dataset_query"] = want["dataset_query"]
            if changes:
                card = api.call("PUT", f"/api/card/{card['id']}", changes)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        ids.append(card["id"])
    print("metabase setup: questions: {created} created, {updated} updated, {unchanged} unchanged".format(**counts))
    return ids, {i["name"]: i["id"] for i in items if i.get("model") == "dashboard"}


def layout(questions, card_ids):
    """Dashboard cards left to right, top to bottom, in file order."""
    cards, row, col, height = [], 0, 0, 0
    for q, card_id in zip(questions, card_ids):
        w, h = (int(n) for n in q.get("size", "12x6").lower().split("x"))
        if col + w > GRID_COLUMNS:
            row, col, height = row + height, 0, 0
        cards.append({"card_id": card_id, "row": row, "col": col, "size_x": w, "size_y": h})
        col, height = col + w, max(height, h)
    return cards


def ensure_dashboard(api, questions, card_ids, collection_id, dashboards):
    description = "The shop and the pipeline from the clickstream gold marts (set up by docker/metabase/setup.py)."
    if NAME in dashboards:
        dash = api.get(f"/api/dashboard/{dashboards[NAME]}")
    else:
        dash = api.call("POST", "/api/dashboard", {"name": NAME, "description": description,
                                                   "collection_id": collection_id})
        print("metabase setup: created dashboard", NAME)
    want = layout(questions, card_ids)
    have = dash.get("dashcards", dash.get("ordered_cards")) or []
    key = ("card_id", "row", "col", "size_x", "size_y")
    if sorted(tuple(c.get(k) for k in key) for c in have) == sorted(tuple(c[k] for k in key) for c in want) \
            and dash.get("description") == description:
        print("metabase setup: dashboard unchanged")
        return dash["id"]
    # keep the ids of cards already there, new ones get negative ids
    free = {}
    for c in have:
        free.setdefault(c.get("card_id"), []).append(c["id"])
    dashcards = []
    for n, c in enumerate(want, 1):
        reuse = free.get(c["card_id"])
        dashcards.append({"id": reuse.pop(0) if reuse else -n, **c,
                          "parameter_mappings": [], "visualization_settings": {}})
    api.call("PUT", f"/api/dashboard/{dash['id']}", {"description": description, "dashcards": dashcards})
    print(f"metabase setup: dashboard {NAME} laid out with {len(dashcards)} questions")
    return dash["id"]


def ensure_foreign_keys(api, db_id, wait):
    """Mark the marts' references as foreign keys, once the sync found them."""
    deadline = time.time() + wait
    while True:
        tables = api.get(f"/api/database/{db_id}/metadata").get("tables") or []
        fields = {(t["name"], f["name"]): f for t in tables if t.get("schema") == "clickstream"
                  for f in t.get("fields") or []}
        needed = {ref for pair in FOREIGN_KEYS for ref in pair}
        if needed <= fields.keys():
            break
        if time.time() > deadline:
            print("metabase setup: the schema sync has not found every mart yet; run again later for the foreign keys")
            return
        time.sleep(5)
    changed = 0
    for source, target in FOREIGN_KEYS:
        f, t = fields[source], fields[target]
        if f.get("semantic_type") != "type/FK" or f.get("fk_target_field_id") != t["id"]:
            api.call("PUT", f"/api/field/{f['id']}", {"semantic_type": "type/FK", "fk_target_field_id": t["id"]})
            changed += 1
    print(f"metabase setup: foreign keys: {changed} set, {len(FOREIGN_KEYS) - changed} already there")


def main():
    parser = argparse.ArgumentParser(description="Set Metabase up for the clickstream extension.")
    parser.add_argument("--questions", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "questions.sql"))
    parser.add_argument("--reset-db-password", action="store_true",
                        help="send the database password again (Metabase does not show the stored one)")
    args = parser.parse_args()
    required = ("MB_URL", "MB_ADMIN_EMAIL", "MB_ADMIN_PASSWORD", "MB_DB_HOST", "MB_DB_PORT",
                "MB_DB_NAME", "MB_DB_USER", "MB_DB_PASSWORD")
    missing = [k for k in required if not os.environ.get(k)]
    if missing:
        raise SystemExit("metabase setup: set " + ", ".join(missing))
    env = os.environ
    questions = read_questions(args.questions)

    api = Api(env["MB_URL"])
    try:
        wait_until_up(api, int(env.get("MB_WAIT", "600")))
        log_in(api, env)
        db_id = ensure_database(api, env, args.reset_db_password)
        collection_id = ensure_collection(api)
        card_ids, dashboards = ensure_cards(api, questions, db_id, collection_id)
        ensure_dashboard(api, questions, card_ids, collection_id, dashboards)
        ensure_foreign_keys(api, db_id, int(env.get("MB_SYNC_WAIT", "300")))
    except ApiError as e:
        print(f"metabase setup: {e}", file=sys.stderr)
        return 1
    print(f"metabase setup: done, {api.writes} changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
