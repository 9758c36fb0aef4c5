"""The stack's app: a counter kept in PostgreSQL and cached in Redis, over HTTP on port 3000.

GET /        adds one to the counter (in PostgreSQL) and caches the new value in Redis; answers {"count": n, ...}
GET /count   the counter, from Redis when it holds it, else from PostgreSQL; answers {"count": n, "from": ...}
GET /healthz 200 when PostgreSQL and Redis both answer within a second, else 503

At start it connects to PostgreSQL, retrying every 0.1 s for up to CONNECT_TRIES times and printing each failed
attempt as a line starting with "connect failed" (notebook 12 counts them); SIGTERM ends it at once.
"""

import signal
import sys

# First of all: as PID 1 it would ignore SIGTERM until it handles it, and a `down` that came during the imports
# below waited out its timeout for a SIGKILL.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from contextlib import closing  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import psycopg2  # noqa: E402
import redis  # noqa: E402

CONNECT_TRIES = 600
RETRY_S = 0.1
VERSION = os.environ.get("APP_VERSION", "1")


def connect_db():
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            return psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=1)
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"connect failed {attempt}: {reason}", flush=True)
            time.sleep(RETRY_S)  # a server that is starting: try again shortly
    sys.exit("gave up connecting to the database")


def new_db():
    connection = psycopg2.connect(os.environ["DATABASE_URL"], connect_timeout=1)
    connection.autocommit = True
    return connection


def cache():
    address = urllib.parse.urlsplit(os.environ["REDIS_URL"])
    return redis.Redis(host=address.hostname, port=address.port or 6379, socket_timeout=1, socket_connect_timeout=1)


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/healthz":
                with closing(new_db()) as connection, connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                cache().ping()
                self.answer(200, {"ok": True, "version": VERSION})
            elif self.path == "/count":
                cached = cache().get("count")
                if cached is not None:
                    self.answer(200, {"count": int(cached), "from": "redis", "version": VERSION})
                    return
                with closing(new_db()) as connection, connection.cursor() as cursor:
                    cursor.execute("SELECT value FROM counter WHERE id = 1")
                    self.answer(200, {"count": cursor.fetchone()[0], "from": "postgres", "version": VERSION})
            elif self.path == "/":
                with closing(new_db()) as connection, connection.cursor() as cursor:
                    cursor.execute("UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value")
                    count = cursor.fetchone()[0]
                cache().set("count", count)
                self.answer(200, {"count": count, "version": VERSION})
            else:
                self.answer(404, {"error": "not found"})
        except (psycopg2.Error, redis.RedisError) as exc:
            self.answer(503, {"error": f"{type(exc).__name__}: {exc}".strip(), "version": VERSION})

    def log_message(self, *args):
        pass  # one line per request would flood `docker logs`


def main():
    connection = connect_db()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, value bigint NOT NULL)")
        cursor.execute("INSERT INTO counter VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
    connection.close()
    print(f"app version {VERSION} listening on :3000", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()


if __name__ == "__main__":
    main()
