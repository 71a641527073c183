#!/usr/bin/env python3
"""A tiny stand-in for Metabase's REST API, for test/t/017_metabase_setup.pl.

It keeps users, databases, collections, cards and dashboards in memory and
answers the endpoints docker/metabase/setup.py uses, in the shapes Metabase
answers them: listings as {"data": [...]}, database passwords hidden, native
cards (as pMBQL stages when FAKE_PMBQL=1, as newer Metabase versions store
them).  Request bodies are checked against the closed schemas of Metabase's
endpoints (an unknown key is a 400, as there).  Every request is appended to
a log, one JSON object per line.

  fake_api.py PORT_FILE LOG_FILE      # listens on a free port of 127.0.0.1
"""

import http.server
import json
import os
import re
import sys
import urllib.parse
import uuid

PORT_FILE, LOG_FILE = sys.argv[1], sys.argv[2]

# the closed key sets of Metabase's request schemas
SETUP_KEYS = {"token", "user", "prefs", "database", "invite"}
DATABASE_KEYS = {"engine", "name", "details", "is_full_sync", "is_on_demand", "schedules",
                 "auto_run_queries", "cache_ttl", "connection_source"}
COLLECTION_KEYS = {"name", "description", "parent_id", "namespace", "authority_level"}
CARD_CREATE_KEYS = {"name", "type", "dataset_query", "entity_id", "parameters", "parameter_mappings",
                    "description", "display", "visualization_settings", "collection_id",
                    "collection_position", "result_metadata", "cache_ttl", "dashboard_id",
                    "dashboard_tab_id", "size", "source_card_id"}
CARD_UPDATE_KEYS = {"name", "parameters", "parameter_mappings", "dataset_query", "type", "display",
                    "description", "visualization_settings", "archived", "enable_embedding",
                    "embedding_type", "embedding_params", "collection_id", "collection_position",
                    "result_metadata", "cache_ttl", "collection_preview", "dashboard_id",
                    "dashboard_tab_id"}
DASHBOARD_CREATE_KEYS = {"name", "parameters", "description", "cache_ttl", "collection_id",
                         "collection_position"}
DASHBOARD_UPDATE_KEYS = {"name", "description", "caveats", "points_of_interest",
                         "show_in_getting_started", "enable_embedding", "embedding_type",
                         "embedding_params", "parameters", "position", "width", "archived",
                         "auto_apply_filters", "collection_id", "collection_position", "cache_ttl",
                         "dashcards", "tabs"}
DASHCARD_KEYS = {"id", "size_x", "size_y", "row", "col", "card_id", "action_id", "dashboard_tab_id",
                 "parameter_mappings", "visualization_settings", "inline_parameters", "series"}
FIELD_KEYS = {"display_name", "description", "semantic_type", "fk_target_field_id",
              "visibility_type", "has_field_values", "settings", "nfc_path", "json_unfolding",
              "coercion_strategy", "caveats", "points_of_interest"}

# the tables a sync of schema clickstream finds, with their keys
TABLES = {"products": ["product_id"], "product_daily": ["day", "product_id"],
          "product_funnel": ["day", "product_id"], "high_interest_low_conversion": ["day", "product_id"],
          "orders": ["order_id", "user_id", "session_id"], "users": ["user_id"],
          "sessions": ["session_id", "user_id"], "daily_metrics": ["day"]}
PRIMARY_KEYS = {("products", "product_id"), ("orders", "order_id"), ("users", "user_id"),
                ("sessions", "session_id"), ("daily_metrics", "day")}

state = {"token": str(uuid.uuid4()), "user": None, "sessions": set(), "next": 1,
         "databases": {}, "collections": {}, "cards": {}, "dashboards": {}, "fields": {}}


def next_id():
    state["next"] += 1
    return state["next"]


class Error(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def closed(body, keys, what):
    if not isinstance(body, dict):
        raise Error(400, f"{what}: a JSON object is expected")
    extra = set(body) - keys
    if extra:
        raise Error(400, f"{what}: disallowed keys {sorted(extra)}")


def need(body, keys, what):
    for k in keys:
        if body.get(k) in (None, ""):
            raise Error(400, f"{what}: {k} is required")


def public_database(db):
    details = dict(db["details"])
    if "password" in details:
        details["password"] = "**MetabasePass**"
    return {**db, "details": details}


def card_view(card):
    view = dict(card)
    if os.environ.get("FAKE_PMBQL") == "1":
        q = card["dataset_query"]
        view["dataset_query"] = {"lib/type": "mbql/query", "database": q["database"],
                                 "stages": [{"lib/type": "mbql.stage/native", "native": q["native"]["query"],
                                             "template-tags": q["native"].get("template-tags", {})}]}
    return view


def handle(method, path, query, body, session):
    if path == "/api/health":
        return {"status": "ok"}
    if path == "/api/session/properties":
        return {"setup-token": None if state["user"] else state["token"],
                "has-user-setup": state["user"] is not None}
    if method == "POST" and path == "/api/setup":
        closed(body, SETUP_KEYS, "setup")
        if state["user"] or body.get("token") != state["token"]:
            raise Error(403, "Token does not match the setup token.")
        user = body.get("user") or {}
        need(user, ("email", "password"), "setup user")
        if not (body.get("prefs") or {}).get("site_name"):
            raise Error(400, "site_name is required")
        state["user"] = {"email": user["email"], "password": user["password"]}
        s = str(uuid.uuid4())
        state["sessions"].add(s)
        return {"id": s}
    if method == "POST" and path == "/api/session":
        u = state["user"]
        if not u or body.get("username") != u["email"] or body.get("password") != u["password"]:
            raise Error(401, "Password did not match stored password.")
        s = str(uuid.uuid4())
        state["sessions"].add(s)
        return {"id": s}
    if session not in state["sessions"]:
        raise Error(401, "Unauthenticated")

    m = re.fullmatch(r"/api/database(?:/(\d+))?(/sync_schema|/metadata)?", path)
    if m:
        db_id = int(m.group(1)) if m.group(1) else None
        if db_id is not None and db_id not in state["databases"]:
            raise Error(404, "Not found.")
        if method == "GET" and db_id is None:
            dbs = [public_database(d) for d in state["databases"].values()]
            return {"data": dbs, "total": len(dbs)}
        if method == "POST" and db_id is None:
            closed(body, DATABASE_KEYS, "database")
            need(body, ("engine", "name", "details"), "database")
            db = {"id": next_id(), "name": body["name"], "engine": body["engine"], "details": body["details"]}
            state["databases"][db["id"]] = db
            return public_database(db)
        if method == "PUT" and m.group(2) is None:
            closed(body, DATABASE_KEYS, "database")
            db = state["databases"][db_id]
            for k in ("name", "engine"):
                if k in body:
                    db[k] = body[k]
            if "details" in body:
                db["details"] = body["details"]
            return public_database(db)
        if method == "POST" and m.group(2) == "/sync_schema":
            if not state["fields"]:
                for table, columns in TABLES.items():
                    for c in columns:
                        state["fields"][next_id()] = {
                            "table": table, "name": c, "fk_target_field_id": None,
                            "semantic_type": "type/PK" if (table, c) in PRIMARY_KEYS else None}
            return {"status": "ok"}
        if method == "GET" and m.group(2) == "/metadata":
            tables = {}
            for fid, f in state["fields"].items():
                tables.setdefault(f["table"], []).append({"id": fid, "name": f["name"],
                                                          "semantic_type": f["semantic_type"],
                                                          "fk_target_field_id": f["fk_target_field_id"]})
            return {"id": db_id, "tables": [{"id": n, "name": t, "schema": "clickstream", "fields": fs}
                                            for n, (t, fs) in enumerate(sorted(tables.items()), 1)]}
    m = re.fullmatch(r"/api/field/(\d+)", path)
    if m and method == "PUT":
        closed(body, FIELD_KEYS, "field")
        f = state["fields"].get(int(m.group(1)))
        if not f:
            raise Error(404, "Not found.")
        f.update({k: body[k] for k in ("semantic_type", "fk_target_field_id") if k in body})
        return {"id": int(m.group(1)), **f}

    if path == "/api/collection" and method == "GET":
        return [{"id": "root", "name": "Our analytics", "personal_owner_id": None}] + \
            list(state["collections"].values())
    if path == "/api/collection" and method == "POST":
        closed(body, COLLECTION_KEYS, "collection")
        need(body, ("name",), "collection")
        c = {"id": next_id(), "name": body["name"], "description": body.get("description"),
             "archived": False, "personal_owner_id": None}
        state["collections"][c["id"]] = c
        return c
    m = re.fullmatch(r"/api/collection/(\d+)/items", path)
    if m and method == "GET":
        cid = int(m.group(1))
        models = query.get("models", [])
        items = [{"id": c["id"], "name": c["name"], "model": "card"} for c in state["cards"].values()
                 if c["collection_id"] == cid and "card" in models]
        items += [{"id": d["id"], "name": d["name"], "model": "dashboard"} for d in state["dashboards"].values()
                  if d["collection_id"] == cid and "dashboard" in models]
        return {"data": items, "total": len(items), "models": models}

    m = re.fullmatch(r"/api/card(?:/(\d+))?", path)
    if m:
        if method == "POST" and not m.group(1):
            closed(body, CARD_CREATE_KEYS, "card")
            need(body, ("name", "dataset_query", "display"), "card")
            if "visualization_settings" not in body:
                raise Error(400, "card: visualization_settings is required")
            if "description" in body and not body["description"]:
                raise Error(400, "card: description must be a non-blank string")
            card = {"id": next_id(), "description": None, **body}
            state["cards"][card["id"]] = card
            return card_view(card)
        card = state["cards"].get(int(m.group(1) or 0))
        if not card:
            raise Error(404, "Not found.")
        if method == "GET":
            return card_view(card)
        if method == "PUT":
            closed(body, CARD_UPDATE_KEYS, "card")
            card.update(body)
            return card_view(card)

    m = re.fullmatch(r"/api/dashboard(?:/(\d+))?", path)
    if m:
        if method == "POST" and not m.group(1):
            closed(body, DASHBOARD_CREATE_KEYS, "dashboard")
            need(body, ("name",), "dashboard")
            d = {"id": next_id(), "name": body["name"], "description": body.get("description"),
                 "collection_id": body.get("collection_id"), "parameters": [], "dashcards": []}
            state["dashboards"][d["id"]] = d
            return d
        d = state["dashboards"].get(int(m.group(1) or 0))
        if not d:
            raise Error(404, "Not found.")
        if method == "GET":
            return {**d, "dashcards": [{**c, "dashboard_id": d["id"], "card": card_view(state["cards"][c["card_id"]])}
                                       for c in d["dashcards"]]}
        if method == "PUT":
            closed(body, DASHBOARD_UPDATE_KEYS, "dashboard")
            if "dashcards" in body:
                old = {c["id"] for c in d["dashcards"]}
                cards = []
                for c in body["dashcards"]:
                    closed(c, DASHCARD_KEYS, "dashcard")
                    need(c, ("id", "size_x", "size_y"), "dashcard")
                    if c["card_id"] not in state["cards"]:
                        raise Error(400, f"dashcard: no card {c['card_id']}")
                    if c["id"] >= 0 and c["id"] not in old:
                        raise Error(400, f"dashcard: no dashcard {c['id']} on this dashboard")
                    cards.append({**c, "id": c["id"] if c["id"] >= 0 else next_id()})
                d["dashcards"] = cards
            for k in ("name", "description", "collection_id"):
                if k in body:
                    d[k] = body[k]
            return handle("GET", path, {}, None, session)
    raise Error(404, f"no fake for {method} {path}")


class Handler(http.server.BaseHTTPRequestHandler):
    def respond(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with open(LOG_FILE, "a") as log:
            log.write(json.dumps({"method": method, "path": url.path, "query": url.query, "body": body}) + "\n")
        try:
            status, answer = 200, handle(method, url.path, query, body, self.headers.get("X-Metabase-Session"))
        except Error as e:
            status, answer = e.status, {"message": str(e)}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.respond("GET")

    def do_POST(self):
        self.respond("POST")

    def do_PUT(self):
        self.respond("PUT")

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
