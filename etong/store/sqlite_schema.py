"""The SQLite store's schema: its migrations, applied in order at open (`SqliteStore._migrate`)."""

from __future__ import annotations

SCHEMA_VERSION = 5

# Each migration takes the schema from version N-1 to N. Append only; never edit a shipped one.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        event_id      TEXT PRIMARY KEY,
        type          TEXT NOT NULL,
        grid_id       TEXT NOT NULL,
        member_id     TEXT NOT NULL,
        status        TEXT NOT NULL,          -- accepted | duplicate
        duplicate_of  TEXT,
        address_key   TEXT NOT NULL,          -- keyed hash of the normalised address
        household_key TEXT NOT NULL,          -- keyed hash of type + address + persons
        received_at   REAL NOT NULL,          -- unix seconds
        payload       BLOB NOT NULL,          -- the validated event, JSON
        summary       BLOB NOT NULL           -- what a history entry shows, JSON
    );
    CREATE INDEX events_household ON events (household_key, received_at)
        WHERE status = 'accepted';
    CREATE INDEX events_address ON events (address_key, received_at) WHERE status = 'accepted';
    CREATE INDEX events_received ON events (received_at);

    CREATE TABLE event_persons (
        person_key  TEXT NOT NULL,            -- keyed hash, never the clear id number
        event_id    TEXT NOT NULL,
        address_key TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX event_persons_key ON event_persons (person_key, received_at);
    CREATE INDEX event_persons_event ON event_persons (event_id);

    CREATE TABLE deliveries (
        delivery_id       TEXT PRIMARY KEY,
        event_id          TEXT NOT NULL,
        grid_id           TEXT NOT NULL,
        member_id         TEXT NOT NULL,
        chain             TEXT NOT NULL,      -- JSON list of officer ids, in escalation order
        step              INTEGER NOT NULL,   -- index of the current recipient in chain
        attempt           INTEGER NOT NULL,   -- pushes made to the current recipient
        state             TEXT NOT NULL,      -- pending | received | verified | undeliverable
        next_due          REAL,               -- unix seconds of the next send, pending only
        published_attempt INTEGER NOT NULL DEFAULT 0,  -- highest step*1000+attempt PUBACKed
        context           BLOB NOT NULL,      -- the push context, JSON
        acked_by          TEXT,
        created_at        REAL NOT NULL,
        updated_at        REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (next_due) WHERE state = 'pending';
    CREATE INDEX deliveries_event ON deliveries (event_id);

    CREATE TABLE receipts (
        id         INTEGER PRIMARY KEY,
        event_id   TEXT,
        topic      TEXT NOT NULL,
        status     TEXT NOT NULL,
        payload    BLOB NOT NULL,
        created_at REAL NOT NULL,
        published  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX receipts_unpublished ON receipts (id) WHERE published = 0;
    CREATE INDEX receipts_event ON receipts (event_id);

    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,            -- rejected | bad_ack | undeliverable
        topic       TEXT NOT NULL,
        payload     BLOB NOT NULL,            -- raw message, capped
        reason      TEXT NOT NULL,
        event_id    TEXT,
        delivery_id TEXT,
        created_at  REAL NOT NULL,
        replayed_at REAL
    );
    CREATE INDEX dead_letters_created ON dead_letters (created_at);
    """,
    # 2: a dead letter closes when its delivery is resolved, by a replay or by a late ack;
    # "open" means not closed (before, only a replay closed one, and a late ack left it open).
    """
    ALTER TABLE dead_letters ADD COLUMN closed_at REAL;   -- unix seconds, NULL while open
    ALTER TABLE dead_letters ADD COLUMN closed_by TEXT;   -- replay | late_ack | resolved
    UPDATE dead_letters SET closed_at = replayed_at, closed_by = 'replay'
        WHERE replayed_at IS NOT NULL;
    CREATE INDEX dead_letters_open_delivery ON dead_letters (delivery_id)
        WHERE closed_at IS NULL;
    """,
    # 3: the station figures (DESIGN §10), which outlive retention: a daily aggregate with no
    # personal data (figures_daily, never purged) and each accepted report's origin, read
    # back when its delivery's fates are counted (figure_origins, purged with its delivery).
    """
    CREATE TABLE figures_daily (
        day      TEXT NOT NULL,               -- local calendar day of the report, ISO
        station  TEXT NOT NULL,
        grid     TEXT NOT NULL,
        member   TEXT NOT NULL,
        officer  TEXT NOT NULL,               -- '' where no officer is meant
        type     TEXT NOT NULL,               -- '' for a report that could not be read
        measure  TEXT NOT NULL,               -- accepted, rejected, received, settled ...
        detail   TEXT NOT NULL,               -- a reason, a flag, a settling day, or ''
        bucket   INTEGER NOT NULL,            -- latency bucket (figure_records), -1 for none
        n        INTEGER NOT NULL,
        PRIMARY KEY (station, day, grid, member, officer, type, measure, detail, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX figures_daily_day ON figures_daily (day);

    CREATE TABLE figure_origins (
        delivery_id TEXT PRIMARY KEY,
        day         TEXT NOT NULL,
        station     TEXT NOT NULL,
        grid        TEXT NOT NULL,
        member      TEXT NOT NULL,
        officer     TEXT NOT NULL,
        type        TEXT NOT NULL,
        accepted_at REAL NOT NULL,
        marks       INTEGER NOT NULL
    );
    CREATE INDEX figure_origins_accepted ON figure_origins (accepted_at);
    """,
    # 4: personal data at rest (DESIGN §9). Data keys per calendar month, wrapped by the
    # key-encryption key (which never enters the store); and where the in-place sealing of a
    # store written in clear stands (store/sqlite_sealing.py: resumable after a kill).
    """
    CREATE TABLE data_keys (
        month      TEXT PRIMARY KEY,          -- YYYY-MM (UTC) of the values it seals
        cipher     TEXT NOT NULL,             -- sm4-gcm | aes-256-gcm
        wrapped    BLOB NOT NULL,             -- the data key sealed by the KEK
        kek_id     TEXT NOT NULL,             -- which KEK wrapped it (a fingerprint)
        created_at REAL NOT NULL
    );
    CREATE TABLE sealing_progress (
        tbl      TEXT PRIMARY KEY,            -- events | deliveries | dead_letters
        last_key TEXT NOT NULL DEFAULT '',    -- the primary key sealed last, in key order
        done     INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO sealing_progress (tbl) VALUES ('events'), ('deliveries'), ('dead_letters');
    """,
    # 5: the station figures' monthly rollup (figure_records.MonthlyRow), for the
    # province-wide report: figures_daily without grid, member and officer, per month, plus
    # the series per day; no personal data, never purged. Filled here from figures_daily so
    # an upgraded store's history answers at once; the batch writes both from then on.
    """
    CREATE TABLE figures_monthly (
        month    TEXT NOT NULL,               -- first local day of the month, ISO
        station  TEXT NOT NULL,
        type     TEXT NOT NULL,
        measure  TEXT NOT NULL,               -- as figures_daily, or day:<measure>
        detail   TEXT NOT NULL,               -- as figures_daily, or (day:) the day
        bucket   INTEGER NOT NULL,
        n        INTEGER NOT NULL,
        PRIMARY KEY (station, month, type, measure, detail, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX figures_monthly_month ON figures_monthly (month);
    INSERT INTO figures_monthly (month, station, type, measure, detail, bucket, n)
        SELECT substr(day, 1, 8) || '01', station, type, measure, detail, bucket, sum(n)
        FROM figures_daily GROUP BY 1, 2, 3, 4, 5, 6
        UNION ALL
        SELECT substr(day, 1, 8) || '01', station, '', 'day:' || measure, day, -1, sum(n)
        FROM figures_daily
        WHERE measure IN ('accepted', 'duplicate_id', 'duplicate_household', 'rejected',
                          'verified')
        GROUP BY 1, 2, 4, 5;
    """,
]


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
