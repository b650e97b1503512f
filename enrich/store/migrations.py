"""The catalog's schema: numbered migrations, each a transaction, recorded in
``schema_migrations`` (``Catalog.migrate`` applies the ones a catalog has not seen).

A change to the schema is a new, higher-numbered entry (``ALTER TABLE`` …), so every catalog,
however old, reaches the same tables. The tables and what each holds are listed in
``enrich.store.catalog``.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial tables",
        """
        CREATE TABLE symbols (
            symbol VARCHAR PRIMARY KEY,
            asset_class VARCHAR NOT NULL,
            name VARCHAR,
            active BOOLEAN NOT NULL DEFAULT true,
            added_at TIMESTAMPTZ NOT NULL,
            listed_since DATE
        );
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,          -- manual | scheduled | retry | backfill | cli
            state VARCHAR NOT NULL,         -- queued | running | succeeded | partial | failed
                                            -- | cancelled | paused (a backfill)
                                            -- | interrupted | missed
            params JSON,
            provider VARCHAR,
            parent_run_id VARCHAR,
            requested_at TIMESTAMPTZ NOT NULL,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            heartbeat_at TIMESTAMPTZ,
            pid INTEGER,
            host VARCHAR,
            symbols_total INTEGER DEFAULT 0,
            symbols_ok INTEGER DEFAULT 0,
            symbols_failed INTEGER DEFAULT 0,
            symbols_skipped INTEGER DEFAULT 0,
            records_written BIGINT DEFAULT 0,
            requests BIGINT DEFAULT 0,
            retries INTEGER DEFAULT 0,
            error_summary JSON,
            message VARCHAR
        );
        CREATE TABLE tasks (
            run_id VARCHAR NOT NULL,
            symbol VARCHAR NOT NULL,
            state VARCHAR NOT NULL,         -- running | ok | failed | skipped | cancelled
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            records BIGINT DEFAULT 0,
            requests INTEGER DEFAULT 0,
            retries INTEGER DEFAULT 0,
            error_class VARCHAR,
            error_message VARCHAR,
            PRIMARY KEY (run_id, symbol)
        );
        CREATE TABLE fetch_log (
            run_id VARCHAR,
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            timeframe VARCHAR,
            started_at TIMESTAMPTZ NOT NULL,
            duration_ms DOUBLE,
            records BIGINT DEFAULT 0,       -- rows inserted or changed in the lake
            received BIGINT DEFAULT 0,      -- rows the provider returned
            rejected BIGINT DEFAULT 0,      -- rows refused by validation
            requests INTEGER DEFAULT 0,
            attempt INTEGER DEFAULT 1,
            status VARCHAR NOT NULL,        -- ok | up_to_date | failed | skipped
            error_class VARCHAR,
            error_message VARCHAR,
            window_start DATE,
            window_end DATE
        );
        CREATE TABLE compute_log (
            run_id VARCHAR,
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            timeframe VARCHAR,
            started_at TIMESTAMPTZ NOT NULL,
            duration_ms DOUBLE,
            records BIGINT DEFAULT 0,
            status VARCHAR NOT NULL,
            error_class VARCHAR,
            error_message VARCHAR
        );
        CREATE TABLE symbol_status (
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            last_attempt_at TIMESTAMPTZ,
            last_success_at TIMESTAMPTZ,
            latest_session DATE,            -- newest session (or event date) held
            covered_through DATE,           -- fetched up to this session
            expected_session DATE,          -- latest expected session at the last attempt
            sessions_behind INTEGER,
            rows_held BIGINT,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            last_error_class VARCHAR,
            last_error_message VARCHAR,
            last_error_at TIMESTAMPTZ,
            not_entitled BOOLEAN NOT NULL DEFAULT false,
            PRIMARY KEY (symbol, dataset)
        );
        CREATE TABLE backfill_progress (
            backfill_id VARCHAR NOT NULL,
            run_id VARCHAR,
            dataset VARCHAR NOT NULL,
            symbol VARCHAR NOT NULL,
            window_start DATE NOT NULL,
            window_end DATE NOT NULL,
            state VARCHAR NOT NULL,         -- pending | running | done | failed
            attempts INTEGER NOT NULL DEFAULT 0,
            requests_expected INTEGER,
            requests_made INTEGER DEFAULT 0,
            records BIGINT DEFAULT 0,
            last_error VARCHAR,
            updated_at TIMESTAMPTZ,
            PRIMARY KEY (backfill_id, dataset, symbol, window_start)
        );
        CREATE TABLE scheduler_state (
            id INTEGER PRIMARY KEY,
            paused BOOLEAN NOT NULL DEFAULT false,
            paused_by VARCHAR,
            paused_at TIMESTAMPTZ,
            pause_reason VARCHAR,
            heartbeat_at TIMESTAMPTZ,
            pid INTEGER,
            host VARCHAR,
            started_at TIMESTAMPTZ,
            next_fire_at TIMESTAMPTZ
        );
        INSERT INTO scheduler_state (id, paused) VALUES (1, false);
        CREATE TABLE data_version (
            id INTEGER PRIMARY KEY,
            version BIGINT NOT NULL,
            updated_at TIMESTAMPTZ
        );
        INSERT INTO data_version VALUES (1, 0, now());
        """,
    ),
    (
        2,
        "scheduler: cancel requests, background handoff, scheduled fire time, heartbeat",
        """
        ALTER TABLE runs ADD COLUMN cancel_requested_at TIMESTAMPTZ;  -- owner stops between
        ALTER TABLE runs ADD COLUMN cancel_requested_by VARCHAR;      -- symbols when set
        ALTER TABLE runs ADD COLUMN handoff BOOLEAN DEFAULT false;    -- queued for `serve`
        ALTER TABLE runs ADD COLUMN scheduled_for TIMESTAMPTZ;        -- the cron fire time
        ALTER TABLE scheduler_state ADD COLUMN resumed_by VARCHAR;
        ALTER TABLE scheduler_state ADD COLUMN resumed_at TIMESTAMPTZ;
        ALTER TABLE scheduler_state ADD COLUMN heartbeat_interval_s DOUBLE;
        ALTER TABLE scheduler_state ADD COLUMN stopped_at TIMESTAMPTZ;
        ALTER TABLE scheduler_state ADD COLUMN schedule_since TIMESTAMPTZ;
        """,
    ),
    (
        3,
        "backfills: one row per backfill, and the option contracts each session follows",
        """
        CREATE TABLE backfills (
            backfill_id VARCHAR PRIMARY KEY,  -- from (dataset, symbols, window, options)
            dataset VARCHAR NOT NULL,         -- bars | dividends | splits | earnings | news
                                              -- | options
            symbols JSON NOT NULL,            -- the symbols, or ["*"] for the universe
            window_start DATE NOT NULL,
            window_end DATE NOT NULL,
            spec JSON,                        -- the request (span, timeframe, expirations …)
            provider VARCHAR,
            status VARCHAR NOT NULL,          -- active | paused | cancelled (the user's intent)
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ,
            last_run_id VARCHAR
        );
        CREATE TABLE backfill_contracts (
            backfill_id VARCHAR NOT NULL,
            symbol VARCHAR NOT NULL,          -- the underlying
            as_of DATE NOT NULL,              -- session the contract was chosen on
            contract VARCHAR NOT NULL,        -- OCC ticker
            expiration DATE NOT NULL,
            strike DOUBLE NOT NULL,
            contract_type VARCHAR NOT NULL,
            underlying_price DOUBLE,          -- as-traded close the moneyness was measured on
            PRIMARY KEY (backfill_id, symbol, as_of, contract)
        );
        """,
    ),
    (
        4,
        "data quality: check results, session coverage, restatements",
        """
        CREATE TABLE quality_log (
            run_id VARCHAR,
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            check_name VARCHAR NOT NULL,      -- enrich.checks.quality.CHECKS
            severity VARCHAR NOT NULL,        -- error | warning
            passed BOOLEAN NOT NULL,
            observed DOUBLE,                  -- the check's measure (count, move, run length)
            threshold DOUBLE,
            detail VARCHAR,                   -- the evidence: the first offending rows
            checked_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE quality_status (         -- the latest result of each check
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            check_name VARCHAR NOT NULL,
            run_id VARCHAR,
            severity VARCHAR NOT NULL,
            passed BOOLEAN NOT NULL,
            observed DOUBLE,
            threshold DOUBLE,
            detail VARCHAR,
            checked_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (symbol, dataset, check_name)
        );
        CREATE TABLE session_coverage (       -- what a symbol × dataset holds, in sessions
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            first_session DATE,               -- first held (bars: the listing, for us)
            last_session DATE,
            through_session DATE,             -- fetched up to
            covered_from DATE,                -- fetched from (first fetch or backfill)
            sessions_expected INTEGER,
            sessions_held INTEGER,
            gaps JSON,                        -- [[first, last], ...] sessions without a row
            failed_sessions JSON,             -- sessions a failing check points at
            checked_at TIMESTAMPTZ,
            run_id VARCHAR,
            PRIMARY KEY (symbol, dataset)
        );
        CREATE TABLE restatements (           -- stored history a re-fetch changed
            run_id VARCHAR,
            symbol VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            session DATE NOT NULL,
            column_name VARCHAR NOT NULL,
            old_value DOUBLE,
            new_value DOUBLE,
            change DOUBLE,                    -- new / old - 1 (null when old is 0 or null)
            detected_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        5,
        "refresh plans: the requests a run plans, and its plan by dataset",
        """
        ALTER TABLE runs ADD COLUMN requests_planned INTEGER;   -- the plan's request budget
        ALTER TABLE runs ADD COLUMN plan JSON;                  -- per dataset: path, requests
        CREATE TABLE plan_limits (            -- what the provider plan allows, as found
            provider VARCHAR NOT NULL,
            limit_key VARCHAR NOT NULL,       -- history:<dataset>[:<timeframe>] | publication
            history_days INTEGER,             -- history: how far back it serves (rolling)
            value VARCHAR,                    -- publication: next_day (after midnight ET)
            detail VARCHAR,                   -- the provider's words, the probe's finding
            found_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (provider, limit_key)
        );
        """,
    ),
    (
        6,  # 5: refresh plans (issue 11)
        "quarantine: unreadable lake files and catalogs moved aside",
        """
        CREATE TABLE quarantine (
            moved_to VARCHAR PRIMARY KEY,     -- where the file is now (relative to the data dir)
            original VARCHAR NOT NULL,        -- where it was
            kind VARCHAR NOT NULL,            -- lake_file | catalog
            dataset VARCHAR,
            level VARCHAR,                    -- bars and features: the timeframe
            symbol VARCHAR,
            reason VARCHAR,                   -- why it could not be read
            size_bytes BIGINT,
            quarantined_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
    (
        7,  # 5: refresh plans (issue 11), 6: quarantine (issue 12)
        "alerts: incident events and their delivery, snoozes",
        """
        CREATE TABLE alerts (                 -- one row per event (enrich.alerts owns it)
            alert_id VARCHAR PRIMARY KEY,
            incident_id VARCHAR NOT NULL,     -- the opening event's id; the resolution's too
            event VARCHAR NOT NULL,           -- opened | resolved | test
            rule VARCHAR NOT NULL,            -- stale | run_failed | scheduler | quota
                                              -- | quality | backfill | test
            dedupe_key VARCHAR NOT NULL,      -- at most one open incident per key
            severity VARCHAR NOT NULL,        -- error | warning | info
            title VARCHAR NOT NULL,
            detail VARCHAR,
            event_at TIMESTAMPTZ NOT NULL,
            delivery VARCHAR NOT NULL,        -- pending | sending | sent | partial | failed
                                              -- | snoozed | no_channel
            attempts INTEGER NOT NULL DEFAULT 0,
            deliveries JSON,                  -- per channel: label (no secret), ok, error
            delivered_at TIMESTAMPTZ,
            claimed_at TIMESTAMPTZ,           -- a sender took it (another one may after 10 min)
            acked_by VARCHAR,
            acked_at TIMESTAMPTZ
        );
        CREATE TABLE alert_snoozes (
            target VARCHAR PRIMARY KEY,       -- a rule, or one incident's dedupe key
            until TIMESTAMPTZ NOT NULL,
            snoozed_by VARCHAR,
            snoozed_at TIMESTAMPTZ NOT NULL,
            reason VARCHAR
        );
        """,
    ),
    (
        8,  # 5: refresh plans, 6: quarantine, 7: alerts
        "options backfills: the exercise style of each contract followed",
        """
        ALTER TABLE backfill_contracts ADD COLUMN exercise_style VARCHAR;  -- american | european
        """,
    ),
    (
        9,  # 8 is taken by parallel work (options and rates, issue 14)
        "ticker identity: what the provider's reference says a symbol is",
        """
        ALTER TABLE symbols ADD COLUMN ticker_type VARCHAR;     -- CS, ETF, PFD, INDEX, …
        ALTER TABLE symbols ADD COLUMN market VARCHAR;          -- stocks, otc, crypto, fx, indices
        ALTER TABLE symbols ADD COLUMN composite_figi VARCHAR;
        ALTER TABLE symbols ADD COLUMN share_class_figi VARCHAR;
        ALTER TABLE symbols ADD COLUMN delisted_on DATE;        -- last traded: kept, not refreshed
        ALTER TABLE symbols ADD COLUMN history_from DATE;       -- nothing before: listing, change
        ALTER TABLE symbols ADD COLUMN ticker_spans VARCHAR;    -- JSON [[ticker, from, to], …]
        ALTER TABLE symbols ADD COLUMN reference_checked_at TIMESTAMPTZ;
        ALTER TABLE symbols ADD COLUMN reference_source VARCHAR;   -- the provider asked
        ALTER TABLE symbols ADD COLUMN reference_error VARCHAR;    -- why the reference refused it
        """,
    ),
    (
        10,
        "backfills: who paused one, and when",
        """
        ALTER TABLE backfills ADD COLUMN paused_by VARCHAR;       -- the latest pause's author
        ALTER TABLE backfills ADD COLUMN paused_at TIMESTAMPTZ;
        """,
    ),
    (
        11,
        "plan history limits per market: the limits learned for every market are forgotten",
        """
        -- history:<dataset>[:<timeframe>] was learned from whichever symbol was refused
        -- first and applied to every market; history:<market>:… is probed again per market.
        DELETE FROM plan_limits WHERE limit_key LIKE 'history:%'
            AND split_part(limit_key, ':', 2) NOT IN ('stocks', 'indices', 'crypto', 'fx');
        """,
    ),
]
