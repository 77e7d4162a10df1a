"""What keeping due times in a table of Celerity's own would cost MariaDB,
per poll (issue 29's remaining candidate, not built). Alone on the shared
test server, in a throwaway database:

  .venv/bin/python tests/python/due_table_probe.py base   # today's poll statements
  .venv/bin/python tests/python/due_table_probe.py due    # plus a due row and batched claims

`base` is a poll's statements as Celerity issues them (the load, then BEGIN,
the guarded UPDATE, the attempt INSERT, COMMIT) at 500 polls/s over 5,000
schedules. `due` adds, inside the same transaction, the UPDATE that moves the
schedule's due row to its next poll, and a claimer that every 100 ms takes
up to 50 due rows with SELECT ... FOR UPDATE SKIP LOCKED and leases them.
A plain UPDATE ... ORDER BY due_at LIMIT n as the claim deadlocks with the
polls' updates of the same index (1213 within seconds). Prints mariadbd's
CPU per poll; compare the two from one sitting. The claimer here finds no
row due (every poll moves its row 10 s on), so a real claim's per-row
UPDATE comes on top.
"""
import os, sys, time, multiprocessing as mp
import pymysql

DB = "celerity_due_probe"
S = 5000
RATE = 500          # polls per second in total
PROCS = 2
SECS = 60

def conn():
    return pymysql.connect(host="127.0.0.1", user="root", database=DB, autocommit=True)

def setup():
    c = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    cur = c.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    cur.execute(f"CREATE DATABASE {DB}")
    cur.execute(f"USE {DB}")
    cur.execute("CREATE TABLE sched (trace_id varchar(64) PRIMARY KEY, invoke_count int, data text, state int, updated_at datetime(6))")
    cur.execute("CREATE TABLE attempt (trace_id varchar(64), attempt int, started_at datetime(6), ended_at datetime(6), outcome varchar(16), PRIMARY KEY (trace_id, attempt))")
    cur.execute("CREATE TABLE due (trace_id varchar(64) PRIMARY KEY, due_at datetime(6) NOT NULL, owner varchar(64) NULL, lease_until datetime(6) NULL, KEY due_key (due_at))")
    for i in range(S):
        cur.execute("INSERT INTO sched VALUES (%s, 0, %s, 2, NOW(6))", (f"t{i}", "x" * 600))
        cur.execute("INSERT INTO due VALUES (%s, NOW(6) + INTERVAL 3600 SECOND, NULL, NULL)", (f"t{i}",))

def poller(k, with_due, stop_at):
    c = conn(); cur = c.cursor()
    n = 0; per = RATE / PROCS; start = time.time()
    ids = [f"t{i}" for i in range(k, S, PROCS)]
    while time.time() < stop_at:
        t = ids[n % len(ids)]; n += 1
        cur.execute("SELECT * FROM sched WHERE trace_id=%s", (t,)); cur.fetchall()
        cur.execute("BEGIN")
        cur.execute("UPDATE sched SET invoke_count=invoke_count+1, updated_at=NOW(6) WHERE trace_id=%s", (t,))
        cur.execute("INSERT INTO attempt VALUES (%s, %s, NOW(6), NOW(6), 'POLL')", (t, n))
        if with_due:
            cur.execute("UPDATE due SET due_at = NOW(6) + INTERVAL 10 SECOND, owner = NULL, lease_until = NULL WHERE trace_id=%s", (t,))
        cur.execute("COMMIT")
        lag = start + n / per - time.time()
        if lag > 0: time.sleep(lag)
    return n

def claimer(stop_at):
    # Claims due rows in batches every 100 ms, as a worker would (the rows
    # the pollers move forward are never due here: this measures the claim
    # statements themselves, against a table of S rows).
    c = conn(); cur = c.cursor(); n = 0
    while time.time() < stop_at:
        # Claim with SKIP LOCKED (MariaDB 10.6+): rows a poll is moving are
        # skipped, not waited on or deadlocked with.
        cur.execute("BEGIN")
        cur.execute("SELECT trace_id FROM due WHERE due_at <= NOW(6) + INTERVAL 5 SECOND AND (owner IS NULL OR lease_until < NOW(6)) ORDER BY due_at LIMIT 50 FOR UPDATE SKIP LOCKED")
        got = [r[0] for r in cur.fetchall()]
        if got:
            cur.execute("UPDATE due SET owner='w1', lease_until=NOW(6) + INTERVAL 30 SECOND WHERE trace_id IN %s", (got,))
        cur.execute("COMMIT")
        n += 1
        time.sleep(0.1)
    return n

def mariadb_cpu():
    pid = int(os.popen("pgrep -x mariadbd").read().split()[0])
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("base", "due"):
        sys.exit("usage: due_table_probe.py base|due")
    with_due = sys.argv[1] == "due"
    setup()
    time.sleep(2)
    stop_at = time.time() + SECS
    cpu0 = mariadb_cpu()
    with mp.Pool(PROCS + 1) as pool:
        polls = [pool.apply_async(poller, (k, with_due, stop_at)) for k in range(PROCS)]
        claims = pool.apply_async(claimer, (stop_at,)) if with_due else None
        total = sum(p.get() for p in polls)
        nclaims = claims.get() if claims else 0
    cpu = mariadb_cpu() - cpu0
    pymysql.connect(host="127.0.0.1", user="root", autocommit=True).cursor().execute(f"DROP DATABASE {DB}")
    print(f"{sys.argv[1]}: {total} polls in {SECS} s ({total/SECS:.0f}/s), {nclaims} claims; mariadbd {cpu:.2f} s = {cpu*1000/total:.3f} ms/poll")
