"""Alerts: rules over the catalog, incidents that open and resolve once, and their delivery.

A *rule* looks at the catalog and returns the *conditions* that hold now, each with a dedupe
key (``rules.RULES``)::

    stale       a dataset not fresh once its session's close plus the provider's lag passed
                (late or stale symbols, one incident per dataset)
    run_failed  a run that ended failed or partial after its retries (one per run), until
                every symbol that failed in it has succeeded since
    scheduler   the schedule owner's heartbeat lost (seen live, or on taking the schedule
                over from a dead owner)
    quota       the provider's quota exhausted (a step failed on 429 after its retries) or a
                429 storm (``STORM_RETRIES`` rate-limited attempts within ``QUOTA_WINDOW``)
    quality     a quality check at error level failing (one per dataset × check)
    backfill    a backfill that failed (one per backfill)

``lifecycle.evaluate`` compares the conditions with the open incidents: a new key opens an incident
(an ``opened`` row of ``alerts``), an open key whose condition is gone is resolved (a
``resolved`` row with the same ``incident_id``). Both run under the catalog's cross-process
lock, so two processes watching (the dashboard and ``serve``) never open a key twice. A rule
that fails to evaluate leaves its incidents as they are.

``lifecycle.deliver_pending`` sends each event once to every channel of ``ENRICH_ALERT_URLS``
(``enrich.channels``, through apprise): events are claimed in a transaction, sent outside the
catalog, and the outcome is recorded. A failing channel is retried with exponential backoff,
then its failure recorded; nothing here raises into the service. A channel is named by
apprise's privacy URL with every credential of its URL scrubbed, in the catalog, the UI and
the logs.

A *snooze* (a rule, or one incident's dedupe key, until an instant) keeps events from being
sent; they are still recorded. An incident opened while snoozed is sent when the snooze ends if
it is still open. *Acknowledging* an incident records who saw it.

``watcher.Watcher`` runs evaluation and delivery on a thread of ``enrich.service.Services``: every
``ALERT_EVERY_S`` seconds and whenever poked (after every run).

The read models the pages show (incidents, snoozes) are in ``enrich.views.alerts``.
"""
