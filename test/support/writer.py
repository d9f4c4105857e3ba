# A Python service as a user would write it (psycopg 3, Debian's python3-psycopg):
# one multi-host URL with target_session_attrs=read-write, autocommit inserts
# into a sync table through qsync's SQL port, reconnecting after an error.
# Prints "ok ID" for each acknowledged write and "err ID SQLSTATE message" for
# each failed one, until SECONDS have passed.
import sys
import time

import psycopg

url, first, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + seconds
conn = None
i = first
while time.monotonic() < deadline:
    try:
        if conn is None or conn.closed:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        conn.execute("INSERT INTO accounts VALUES (%s, 'psycopg', 0)", (i,))
        print(f"ok {i}", flush=True)
    except psycopg.Error as error:
        print(f"err {i} {error.sqlstate} {str(error).splitlines()[0] if str(error) else ''}", flush=True)
        try:
            if conn is not None:
                conn.close()
        except psycopg.Error:
            pass
        conn = None
        time.sleep(0.05)
    i += 1
