"""Settings, read from environment variables with embedded defaults.

No DATABASE_URL means SQLite in the project's var/ folder; no broker URL means Celery tasks
run in-process. The same code runs on PostgreSQL + Redis + separate worker and beat
processes. Bad values fail loudly at start-up rather than half-working.
"""

import base64
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def _dev_secret(filename: str, make) -> str:
    """A development-only secret generated once into var/, with a loud warning."""
    path = VAR_DIR / filename
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = envbool("DEBUG", "true")

SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = _dev_secret("dev-secret-key", lambda: secrets.token_urlsafe(50))

# The key-encryption key (KEK) wraps every private key the portal stores: the credential
# issuer's, the ledger's checkpoint signer and custodial participant keys. It is 32 random
# bytes, base64url-encoded, and never lives in the database.
KEY_ENCRYPTION_KEY = os.getenv("KEY_ENCRYPTION_KEY", "")
if not KEY_ENCRYPTION_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("KEY_ENCRYPTION_KEY must be set when DEBUG is false")
    print(
        "WARNING: KEY_ENCRYPTION_KEY is not set; using a generated development key from "
        f"{VAR_DIR / 'dev-key-encryption-key'}. Never run real participants on it.",
        file=sys.stderr,
    )
    KEY_ENCRYPTION_KEY = _dev_secret(
        "dev-key-encryption-key",
        lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
    )
try:
    if len(base64.urlsafe_b64decode(KEY_ENCRYPTION_KEY + "=" * (-len(KEY_ENCRYPTION_KEY) % 4))) != 32:
        raise ValueError
except ValueError:
    raise ImproperlyConfigured("KEY_ENCRYPTION_KEY must be 32 bytes, base64url-encoded") from None

# The demo's published token and passwords work only where this is true: with DEBUG on, as
# load_demo requires; never in production, even if demo data was loaded before.
DEMO_ALLOWED = DEBUG

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# The public address of the portal: status lists and contexts are published under it, so
# credentials name URLs a verifier inside the same network can fetch.
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "axes",
    "django_prometheus",
    "django_guid",
    "identity",
    "ledger",
    "consent_portal",
]

MIDDLEWARE = [
    # Request counts and latencies by view and status, for /metrics (django-prometheus).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # A request id (X-Request-ID, a UUID, made if absent), in every log line and answer.
    "django_guid.middleware.guid_middleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy (django-csp) and Permissions-Policy on every response.
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    # A chunked body (gunicorn de-chunks it) is read, not taken as empty.
    "consent_portal.middleware.ChunkedBodyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Personal pages and API answers: Cache-Control: no-store.
    "consent_portal.middleware.PrivatePagesMiddleware",
    # A view that finds the database unreachable answers 503 + Retry-After (errors.py).
    "consent_portal.errors.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: answers a locked-out login.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "VALIDATE_GUID": True,  # a client's id is kept only if it is a UUID
    "RETURN_HEADER": True,
    "EXPOSE_HEADER": True,
}
# /metrics needs this bearer token; unset, only requests from this host may read it.
METRICS_TOKEN = os.getenv("METRICS_TOKEN", "")
# /readyz fails when an entry has waited longer than this to be sealed (worker down?).
LEDGER_READY_MAX_LAG_SECONDS = envint("LEDGER_READY_MAX_LAG_SECONDS", "120")

# Logins are throttled and locked out (django-axes) for every kind of account: after
# AXES_FAILURE_LIMIT failures for one username, or from one address, within the cool-off,
# that username or address is refused until the cool-off ends. A success resets the count.
AUTHENTICATION_BACKENDS = [
    "consent_portal.auth_backends.ThrottledLoginBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "10")
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", "15"))
# A username and the address it is tried from, together: a guesser is stopped, and no one can
# lock the committee or the admin out of their accounts from elsewhere. (Guessing one
# account from many addresses is not; that is what the 12-character rule is for.)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "errors/locked.html"
# Behind proxies, how many of them append to X-Forwarded-For: the client's address is the
# one that many places from the right (auth_backends.client_ip). 0: REMOTE_ADDR.
PROXY_COUNT = envint("PROXY_COUNT", os.getenv("AXES_PROXY_COUNT", "0"))
AXES_CLIENT_IP_CALLABLE = "consent_portal.auth_backends.client_ip"

# No script, style, frame or form target from anywhere but this site; nothing is inline.
_SELF, _NONE = "'self'", "'none'"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_SELF],
        "script-src": [_SELF],
        "style-src": [_SELF],
        "img-src": [_SELF, "data:"],
        "connect-src": [_SELF],
        "font-src": [_SELF],
        "object-src": [_NONE],
        "base-uri": [_NONE],
        "form-action": [_SELF],
        "frame-ancestors": [_NONE],
    },
}
# Browser features no page here uses.
PERMISSIONS_POLICY = {feature: [] for feature in (
    "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media", "fullscreen",
    "geolocation", "gyroscope", "magnetometer", "microphone", "midi", "payment",
    "picture-in-picture", "publickey-credentials-get", "screen-wake-lock", "usb", "xr-spatial-tracking",
)}

ROOT_URLCONF = "consent_portal.urls"
WSGI_APPLICATION = "consent_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "consent_portal.context_processors.participant_status",
            ],
        },
    },
]

if os.getenv("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The few hot queries that run through a server-binding psycopg cursor (the consent
        # check, the sequencer) are prepared after this many runs on a connection; Django's
        # own queries bind client-side and are never prepared. 0 turns preparing off (a
        # proxy that pools by transaction, such as PgBouncer before 1.21, needs that).
        _prepare = envint("DATABASE_PREPARE_THRESHOLD", "5")
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = _prepare if _prepare > 0 else None
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # Wait for the sequencer's lock instead of failing at once.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
if DEBUG:
    # Served from the app folders by WhiteNoise's finders; collectstatic fills it in production.
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Request bodies above this size are refused with 413 before they are parsed; 2 MiB fits a
# bulk check of 10,000 sample identifiers.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(2 * 1024 * 1024))

EMAIL_BACKEND = os.getenv("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "consent_portal.api.auth.CustodianTokenAuthentication",
        "ledger.auth.MemberTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Refuses too-deep or too-large JSON, NUL bytes and lone surrogates (api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["consent_portal.api.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "consent_portal.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Consent portal API",
    "DESCRIPTION": "Custodian consent checks with verifiable evidence, and the consent ledger.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # Every operation documents the error answers every endpoint can give (api/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "consent_portal.api.schema.add_error_responses"],
}

# Celery: no broker URL means tasks run in-process (eager), which the embedded default uses.
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL") or os.getenv("REDIS_URL") or ""
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
# One queue name per deployment (and per test run, so test workers never take real work).
CELERY_TASK_DEFAULT_QUEUE = os.getenv("CELERY_QUEUE", "consent-portal")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    # Seals whatever a lost task message left pending.
    "ledger-sweep": {"task": "ledger.tasks.sweep", "schedule": envint("LEDGER_SWEEP_SECONDS", "30")},
    # Suspensions with an end date resume by themselves; stored dates, swept, no countdowns.
    "consents-resume-due": {"task": "consent_portal.tasks.consents_resume_due", "schedule": 60},
    # Asks participants about approved uses whose request task was lost.
    "consent-requests-sweep": {"task": "consent_portal.tasks.consent_requests_sweep", "schedule": 60},
}

# The ledger. The origin names this log in its checkpoints (C2SP tlog-checkpoint).
LEDGER_ORIGIN = os.getenv("LEDGER_ORIGIN", "localhost/consent-portal/ledger")
LEDGER_KEY_NAME = os.getenv("LEDGER_KEY_NAME", LEDGER_ORIGIN)
LEDGER_SEAL_BATCH = envint("LEDGER_SEAL_BATCH", "1000")
# How long a seal task waits for more entries before sealing (with a Redis broker): a
# little latency to the proof for far fewer checkpoints under a stream of writes, and for
# half of it a process that queued the seal asks Redis nothing (ledger.tasks.seal_soon).
LEDGER_SEAL_LINGER_MS = envint("LEDGER_SEAL_LINGER_MS", "100")
# Entries carry no personal data, but a deployment may still keep its log to members.
LEDGER_PUBLIC = envbool("LEDGER_PUBLIC", "false")
# A checkpoint is final once this many registered witnesses have cosigned it. 0 (the
# embedded default, which runs no witnesses) makes the log's own signature final; a
# consortium sets it to its quorum.
LEDGER_WITNESS_QUORUM = envint("LEDGER_WITNESS_QUORUM", "0")
# Seconds to wait for a witness's add-checkpoint answer.
LEDGER_WITNESS_TIMEOUT = envint("LEDGER_WITNESS_TIMEOUT", "10")

# Demo data and the portal's own organisation name, shown in pages.
PORTAL_NAME = os.getenv("PORTAL_NAME", "Biobank consent portal")

# Logs: JSON lines (python-json-logger) with the request id, the default when DEBUG is off;
# LOG_FORMAT=text for people reading a terminal.
LOG_FORMAT = os.getenv("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "django_guid.log_filters.CorrelationId", "correlation_id_field": "request_id"}},
    "formatters": {
        "json": {"()": "pythonjsonlogger.json.JsonFormatter",
                 "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request_id"], "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"django_guid": {"level": "WARNING"}},
}

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "true")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
