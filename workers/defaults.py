"""Named defaults, each with its unit in the name. Settings may override them."""

# Web edge
MAX_BODY_BYTES = 1024 * 1024            # larger deliveries answer 413
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0      # web answers 503 rather than hang on a dead Redis
RETRY_AFTER_SECONDS_ON_503 = 30

# Deliveries
DELIVERY_TTL_SECONDS = 7 * 24 * 3600    # how long a delivery id is remembered for dedupe
QUEUE_NAME = "relance"

# Jobs
JOB_TIMEOUT_SECONDS = 60
JOB_RETRIES = 9                         # after the first try
# The first retry is immediate: it is queued directly, without RQ's scheduler, so the
# job of a SIGKILLed worker runs again at once even if that worker held the scheduler
# lock (which outlives it by up to 61 s). Later retries back off through the scheduler.
JOB_RETRY_INTERVALS_SECONDS = [0, 5, 15, 60, 120, 300, 600, 1800, 1800]
RESULT_TTL_SECONDS = 3600

# Worker: how fast work of a SIGKILLed worker is picked up again.
# A started job's registry entry expires JOB_TIMEOUT + HEARTBEAT_GRACE after it
# starts; the next maintenance pass (every MAINTENANCE_INTERVAL) retries it.
HEARTBEAT_GRACE_SECONDS = 5
MAINTENANCE_INTERVAL_SECONDS = 15
WORKER_TTL_SECONDS = 30                 # a worker blocks WORKER_TTL - 15 s per dequeue
PUBSUB_STOP_SECONDS = 5                 # at most this long for RQ's command-channel thread to end at shutdown
# Jobs one worker process runs at once, each in a thread (docs/performance.md#processing: with JIRA
# and SendGrid 100 ms away, 32 threads did 41 events/s, 16 did 31, an RQ WorkerPool of 16 processes 26).
WORKER_THREADS = 32

# Timers
TIMER_POLL_SECONDS = 0.2                # bounds how late a due timer is picked up
TIMER_BATCH = 500                       # timers claimed at most per claim (one Lua call)
TIMER_JOB_SIZE = 50                     # timers fired by one RQ job (RELANCE_TIMER_JOB_SIZE overrides it)
# Firing jobs waiting at the head of the queue beyond which the pumps claim no more: a burst of
# due timers is claimed as workers get through it, so no claimed timer outlives its lease queued.
TIMER_JOBS_WAITING = 8
TIMER_ROUND = 25                        # timers a firing job reads, locks and records together (dry run)

# Reconcile: the worker asks JIRA for tickets changed lately (webhooks lost in an outage)
RECONCILE_INTERVAL_SECONDS = 3600       # RELANCE_RECONCILE_INTERVAL overrides it
RECONCILE_SINCE_SECONDS = 7 * 24 * 3600  # how far back it looks (relance reconcile --since)
RECONCILE_PAGE_SIZE = 100               # issues per search page
# A ticket updated more recently than this is left for the next run: JIRA retries a webhook for
# about 30 minutes, and a change fed both by reconcile and by its late webhook would act twice.
RECONCILE_GRACE_SECONDS = 35 * 60
RECONCILE_LOCK_SECONDS = 15 * 60        # one run at a time across workers; a dead holder's lock expires

# Retention: every key relance writes (but the timer index) expires this long after
# the ticket's last activity; RELANCE_RETENTION overrides it.
RETENTION_SECONDS = 90 * 24 * 3600

# Tickets
MAX_CLOCK_AHEAD_SECONDS = 300           # an event dated later than this ahead of our clock is read as now
AUDIT_MAXLEN = 1000                     # entries kept per ticket timeline
# The decision lock is held for Redis work only (milliseconds); a job waits this long
# for it, then fails its attempt (TicketBusy) instead of parking its worker.
LOCK_SECONDS = 10                       # a dead holder's lock expires after this
LOCK_WAIT_SECONDS = 5

# JIRA groups of customers (the rules file's customers:) are re-read this often
GROUP_CACHE_SECONDS = 600

# HTTP clients
HTTP_TIMEOUT_SECONDS = 10.0
# A 429/503 whose Retry-After (or rate-limit reset) is this close is waited out in the job
# itself, at most INLINE_RETRIES times; a later one fails the attempt and RQ retries the job.
INLINE_RETRY_AFTER_SECONDS = 10
INLINE_RETRIES = 2
INLINE_RETRIES_WITH_BUDGET = 6          # when every worker waits together (a budget shared in Redis)
# Calls per second relance allows itself to each remote, across all its workers (a budget held in
# Redis); 0: no pacing, only the pauses JIRA or SendGrid ask for with 429 (every worker honours them).
JIRA_RATE_PER_SECOND = 0.0
SENDGRID_RATE_PER_SECOND = 0.0

# Email both ways (docs/email.md)
REPLY_TOKEN_DAYS = 180                  # a reply address works this long after its email was sent
INBOUND_MAX_BODY_BYTES = 32 * 1024 * 1024   # Inbound Parse posts reach 30 MB
# A reply longer than this is cut in its comment, its whole text attached (JIRA's limit: 32,767 characters,
# with room left for the comment's header and the links to the attachments).
REPLY_COMMENT_MAX_CHARS = 30_000
REPLY_FLOOD_PER_HOUR = 20               # replies taken from one sender per hour; more are refused
MAIL_EVENT_TTL_SECONDS = 7 * 24 * 3600  # how long an Event Webhook sg_event_id is remembered for dedupe
# A signed SendGrid post older than this is refused as a replay: SendGrid retries for up to 3 days
# (Inbound Parse; 1 day for events), plus a day's margin. Kept below the dedupe TTLs above, so a
# replayed post is either refused or a duplicate, never processed twice.
SENDGRID_SIGNATURE_MAX_AGE_SECONDS = 4 * 24 * 3600

# Embedded defaults
OUTBOX_DIR = "outbox"
EMBEDDED_REDIS_DIR = ".relance/redis"
RULES_FILE = "rules.yaml"
