"""etong against two baselines on one private mosquitto (issues #5 and 11).

    python bench/e2e --events 20000 --json bench/results/e2e-20000.json
    python bench/e2e --stations 6 --grids 12 \
        --store postgresql://postgres@127.0.0.1:5432/postgres --instances 1,2,3

Every contender gets the same load: grid members publish valid, distinct reports at QoS 1, and
one officer terminal per grid acks every push it receives.

- A, the naive baseline (`baseline`): a paho client that subscribes to the events topics and
  republishes each payload to the grid officer's inbox (QoS 1, paho's auto-ack and defaults,
  nothing stored).
- W, the wire relay (`relay`): the MQTT exchanges etong makes per report (report in,
  `accepted` receipt, push, the officer's ack in, `received` receipt) through etong's own MQTT
  adapter, with no store and no checks: the wire work any bridge of this protocol must do.
- B (`daemon`): the real `etong run` process with a fresh SQLite store and the generated
  roster.
- P1, P2, ... (`cluster`, with `--store URL --instances 1,2,...`): that many `etong run`
  processes sharing a fresh PostgreSQL database (`pg_cluster`), each holding the leases of some
  stations; measured once every station is served.

Each round runs every contender once (round i starting with the i-th, rotating), each on a
fresh broker (so no queue or session of an earlier contender is left behind). A contender's
turn (`rounds`) is: warm-up, a throughput phase (N reports as fast as the publishers go), a
latency phase (reports paced at `--rate` for `--latency-s`), and a half-load phase (paced at
half of the throughput it just measured, to `received` when it sends receipts): the same
relative load on a slow machine and a fast one.

Who runs where, and why:
- the publishers run in a child process of their own (`publisher`: several MQTT connections
  on one asyncio loop), so receiving pushes never waits for the publishers' GIL and vice versa;
  every payload is generated and encoded before any timing starts (`load`, `plan`);
- the officer terminals and the receipt watcher (`terminals`) run in the parent process, on
  one asyncio loop thread (`loopthread`); each push and receipt is stamped with
  `time.monotonic()` on arrival. CLOCK_MONOTONIC is one clock for every process of the machine,
  so a send time stamped in the publisher process compares with an arrival here;
- the baseline republisher and the relay run in child processes (`children`), as the daemon
  does;
- the load generator speaks MQTT through `mqtt.MiniMqtt`, not paho: see there why.

Measured per turn (`measures`, `stats`): throughput (first publish to the last report's first
push), for those with receipts also the lifecycle throughput (to the last `received` receipt),
latency publish-to-push p50/p99 in each paced phase, CPU ms per report of the contender
(psutil: user+sys over the throughput phase divided by N, summed over a cluster's instances;
the PostgreSQL server's processes apart) and its peak RSS (sampled every 100 ms, summed over
instances). The JSON (`results`, `run`) has medians, and min-max and every round beside them;
`output` prints the table and writes the file; `cli` reads the command line.

The modules, one job each: `cli` (command line), `run` (every round of every contender),
`rounds` (one contender's turn), `lineup` (which contenders, in which order), `contender` (a
started contender's handle), `children` (A and W as child processes), `baseline` (A),
`relay` (W), `daemon` (B, and every etong's config), `cluster` (P*n*), `pg_cluster` (the
PostgreSQL server: databases, leases, readiness), `plan` (settings and every report), `load`
(roster and reports), `publisher`, `terminals`, `mqtt`, `loopthread`, `measures`, `stats`,
`results`, `machine` (what ran it), `output`, `errors`.
"""
