"""A small shop web service for the full-system drill: it reads what drproof restores.

Standard library HTTP server; psycopg2 and redis come with drproof (run it with the
`{python}` drproof runs on). Connection details arrive in the environment as drproof
gives them to application components: DRPROOF_<COMPONENT>_URL, _PASSWORD, _HOST, _PORT,
and the port to listen on in PORT (on 127.0.0.1, or on SHOP_LISTEN in a container).

    GET /health              200 when the database and the cache both answer
    GET /customers/<id>      the customer's order count and total, and their cart
    POST /workload/<n>       drproof's workload: record n, committed to the database
    GET /workload            the workload records the database holds, as a JSON list
"""

from __future__ import annotations

import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

DB = os.environ["DRPROOF_SHOP_DB_URL"]
DB_PASSWORD = os.environ.get("DRPROOF_SHOP_DB_PASSWORD")
CACHE = redis.Redis(
    host=os.environ["DRPROOF_SESSIONS_HOST"],
    port=int(os.environ["DRPROOF_SESSIONS_PORT"]),
    password=os.environ.get("DRPROOF_SESSIONS_PASSWORD"),
    socket_timeout=2,
)


# drproof leaves its workload table out of the database's fingerprint: the table of this
# name that carries this comment (engine.components.postgres_catalog.WORKLOAD_COMMENT),
# and no other (a table merely named so is the database's own and compared).
WORKLOAD = "drproof_workload"
WORKLOAD_COMMENT = "drproof drill workload: its rows are judged by the recovery point, not by fingerprints"


def query(sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg2.connect(DB, password=DB_PASSWORD, connect_timeout=2) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        try:
            if self.path == "/health":
                query("SELECT 1")
                CACHE.ping()
                self.answer(200, {"status": "ok"})
            elif m := re.fullmatch(r"/customers/(\d+)", self.path):
                self.customer(int(m.group(1)))
            elif self.path == "/workload":
                present = query(f"SELECT seq FROM {WORKLOAD}") if query(f"SELECT to_regclass('{WORKLOAD}')")[0][0] else []
                self.answer(200, [int(str(row[0])) for row in present])
            else:
                self.answer(404, {"error": "not found"})
        except (psycopg2.Error, redis.RedisError) as exc:
            self.answer(503, {"status": "unavailable", "error": type(exc).__name__})

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        m = re.fullmatch(r"/workload/(\d+)", self.path)
        if m is None:
            self.answer(404, {"error": "not found"})
            return
        try:
            # Committed before the answer: a 2xx means the record is durable, as drproof assumes.
            query(
                f"CREATE TABLE IF NOT EXISTS {WORKLOAD} (seq bigint PRIMARY KEY, written_at timestamptz NOT NULL "
                f"DEFAULT clock_timestamp()); COMMENT ON TABLE {WORKLOAD} IS %s",
                WORKLOAD_COMMENT,
            )
            query(f"INSERT INTO {WORKLOAD} (seq) VALUES (%s) ON CONFLICT DO NOTHING", int(m.group(1)))
        except psycopg2.Error as exc:
            self.answer(503, {"status": "unavailable", "error": type(exc).__name__})
            return
        self.answer(201, {"stored": int(m.group(1))})

    def customer(self, cid: int) -> None:
        rows = query("SELECT count(*), coalesce(sum(amount), 0)::text FROM orders WHERE customer_id = %s", cid)
        count, total = rows[0]
        if count == 0:
            self.answer(404, {"error": "no such customer"})
            return
        has_cart = bool(CACHE.exists(f"cart:{cid}"))
        self.answer(200, {"customer": cid, "orders": count, "total": total, "has_cart": has_cart})

    def answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass  # quiet: drproof keeps the process's output in its log


if __name__ == "__main__":
    # Loopback as a process; a container listens on its network (SHOP_LISTEN=0.0.0.0) and
    # drproof publishes the port on the host's loopback only.
    ThreadingHTTPServer((os.environ.get("SHOP_LISTEN", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
