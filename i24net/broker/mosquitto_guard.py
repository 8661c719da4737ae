"""A Mosquitto 2.0 plugin that binds client ids to accounts and logs refusals, rate-limited.

Theory of operation: Mosquitto 2.0 has no setting that ties a client id to its account except
``use_username_as_clientid``, which allows one connection per account (router shards, the
directory publisher and an agency's extra sessions would knock each other off). Without a
binding, any account can present another account's client id: Mosquitto then closes the
other connection ("already connected, closing old connection") and discards its session, so
an agency could knock the router off the broker again and again.

This plugin is the rule the embedded broker enforces (``accounts.client_id_allowed``: account
``U`` may use client id ``U`` or ``U:<suffix>``), written in C against Mosquitto's plugin
interface version 5 (``mosquitto_broker.h`` of 2.0; the few declarations it needs are
written out below, so no development headers are needed). ``ensure_guard`` compiles it with
the system C compiler into the broker's directory, once per source version; Mosquitto
resolves the ``mosquitto_*`` functions from its own executable when it loads the plugin.

What it does, in the order Mosquitto calls it:

- **Logins** (``MOSQ_EVT_BASIC_AUTH``; plugins registered before the password file's check, so
  this one runs first). A client id outside the account is refused (``MOSQ_ERR_AUTH``: CONNACK
  5, before Mosquitto looks at any session, so the account owning that id keeps its
  connection). Otherwise it asks Mosquitto's own check (``mosquitto_unpwd_check``, which
  comes back to this plugin once and is deferred to the password file) and logs the refusal
  of a wrong password or an unknown user. Mosquitto runs the same check again for every
  connected client when it rereads its files (SIGHUP): a revoked account is disconnected.
- **Topics** (``MOSQ_EVT_ACL_CHECK``): the ACL file decides, through the same re-entry; a
  denied publish or delivery is logged. A publish by any account but the router's whose
  payload exceeds ``max_agency_payload`` bytes is denied too (the broker-wide
  ``max_packet_size`` has to admit the router's signed directory, several times larger than
  any envelope).
- **Logging**: each kind of refusal (logins, topics) has a token bucket of ``log_burst``
  lines refilled at ``log_per_second`` (``refusals.LOG_BURST`` / ``LOG_PER_SECOND``); what the bucket does not admit is counted and the
  count given on the next line written, so a flood of refusals cannot fill the disk. Names
  and topics are written at most 200 bytes long, control characters replaced by ``?``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from i24net.broker.errors import BrokerConfigError
from i24net.broker.refusals import LOG_BURST, LOG_PER_SECOND

__all__ = ["GUARD_SOURCE", "LOG_BURST", "LOG_PER_SECOND", "ensure_guard", "find_compiler"]


GUARD_SOURCE = r"""
/* i24net's Mosquitto 2.0 plugin (interface version 5); see i24net/broker/mosquitto_guard.py. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mosquitto;
struct mosquitto_opt { char *key; char *value; };
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
struct mosquitto_evt_acl_check {
    void *future; struct mosquitto *client; const char *topic; const void *payload;
    void *properties; int access; uint32_t payloadlen; uint8_t qos; bool retain;
    void *future2[4];
};
struct mosquitto_evt_basic_auth {
    void *future; struct mosquitto *client; char *username; char *password; void *future2[4];
};

#define EVT_ACL_CHECK 2
#define EVT_BASIC_AUTH 3
#define ERR_SUCCESS 0
#define ERR_AUTH 11
#define ERR_ACL_DENIED 12
#define ERR_PLUGIN_DEFER 17
#define LOG_WARNING (1 << 2)
#define ACL_READ 0x01
#define ACL_WRITE 0x02

typedef int (*callback_t)(int, void *, void *);
int mosquitto_callback_register(mosquitto_plugin_id_t *, int, callback_t, const void *, void *);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *, int, callback_t, const void *);
const char *mosquitto_client_id(const struct mosquitto *);
const char *mosquitto_client_username(const struct mosquitto *);
const char *mosquitto_client_address(const struct mosquitto *);
void mosquitto_log_printf(int level, const char *fmt, ...);
int mosquitto_acl_check(struct mosquitto *, const char *, uint32_t, void *, uint8_t, bool, int);
int mosquitto_unpwd_check(struct mosquitto *);

struct bucket { double tokens; double last; unsigned long suppressed; };

static mosquitto_plugin_id_t *plugin_id;
static char router_user[129] = "i24-router";
static unsigned long max_agency_payload;  /* 0: no cap */
static double burst = 20, per_second = 1;
static struct bucket logins, topics;
static int inside_auth, inside_acl;  /* Mosquitto is single-threaded */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void clean(char *out, size_t size, const char *in) {
    size_t i = 0;
    if (in == NULL) in = "(none)";
    for (; in[i] != '\0' && i + 1 < size; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[i] = '\0';
}

static void refusal(struct bucket *b, const char *fmt, ...) {
    double t = now_s();
    char line[1024];
    va_list args;
    b->tokens += (t - b->last) * per_second;
    if (b->tokens > burst) b->tokens = burst;
    b->last = t;
    if (b->tokens < 1) { b->suppressed++; return; }
    b->tokens -= 1;
    va_start(args, fmt);
    vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    if (b->suppressed) {
        mosquitto_log_printf(LOG_WARNING, "i24net: %s (and %lu more not logged)",
                             line, b->suppressed);
        b->suppressed = 0;
    } else {
        mosquitto_log_printf(LOG_WARNING, "i24net: %s", line);
    }
}

static bool id_allowed(const char *user, const char *id) {
    size_t n;
    if (user == NULL || id == NULL) return false;
    n = strlen(user);
    return strncmp(id, user, n) == 0 && (id[n] == '\0' || id[n] == ':');
}

static int on_auth(int event, void *data, void *userdata) {
    struct mosquitto_evt_basic_auth *ed = data;
    const char *id;
    char user[201], cid[201], addr[64];
    int rc;
    (void)event; (void)userdata;
    if (inside_auth) return ERR_PLUGIN_DEFER;  /* our own call below: the password file */
    id = mosquitto_client_id(ed->client);
    clean(user, sizeof user, ed->username);
    clean(cid, sizeof cid, id);
    clean(addr, sizeof addr, mosquitto_client_address(ed->client));
    if (ed->username != NULL && !id_allowed(ed->username, id)) {
        refusal(&logins, "refused login of %s from %s: client id '%s' does not belong to "
                "that account (use '%s' or '%s:...')", user, addr, cid, user, user);
        return ERR_AUTH;
    }
    inside_auth = 1;
    rc = mosquitto_unpwd_check(ed->client);
    inside_auth = 0;
    if (rc != ERR_SUCCESS) {
        refusal(&logins, "refused login of %s from %s (client id '%s'): %s", user, addr,
                cid, ed->username ? "wrong password or no such account" : "no username");
    }
    return rc;
}

static int on_acl(int event, void *data, void *userdata) {
    struct mosquitto_evt_acl_check *ed = data;
    const char *user;
    char who[201], cid[201], topic[201];
    int rc;
    (void)event; (void)userdata;
    if (inside_acl) return ERR_PLUGIN_DEFER;  /* our own call below: the ACL file */
    if (ed->access != ACL_READ && ed->access != ACL_WRITE) return ERR_PLUGIN_DEFER;
    user = mosquitto_client_username(ed->client);
    if (ed->access == ACL_WRITE && max_agency_payload && ed->payloadlen > max_agency_payload
            && (user == NULL || strcmp(user, router_user) != 0)) {
        clean(who, sizeof who, user);
        clean(cid, sizeof cid, mosquitto_client_id(ed->client));
        clean(topic, sizeof topic, ed->topic);
        refusal(&topics, "denied publish by %s (client '%s') on '%s': %lu bytes, over the "
                "%lu allowed", who, cid, topic, (unsigned long)ed->payloadlen,
                max_agency_payload);
        return ERR_ACL_DENIED;
    }
    inside_acl = 1;
    rc = mosquitto_acl_check(ed->client, ed->topic, ed->payloadlen, (void *)ed->payload,
                             ed->qos, ed->retain, ed->access);
    inside_acl = 0;
    if (rc == ERR_ACL_DENIED) {
        clean(who, sizeof who, user);
        clean(cid, sizeof cid, mosquitto_client_id(ed->client));
        clean(topic, sizeof topic, ed->topic);
        refusal(&topics, "denied %s %s (client '%s') on '%s'",
                ed->access == ACL_WRITE ? "publish by" : "delivery to", who, cid, topic);
    }
    return rc;
}

int mosquitto_plugin_version(int count, const int *versions) {
    for (int i = 0; i < count; i++) if (versions[i] == 5) return 5;
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **userdata,
                          struct mosquitto_opt *opts, int count) {
    (void)userdata;
    plugin_id = id;
    for (int i = 0; i < count; i++) {
        if (strcmp(opts[i].key, "router_user") == 0) {
            snprintf(router_user, sizeof router_user, "%s", opts[i].value);
        } else if (strcmp(opts[i].key, "max_agency_payload") == 0) {
            max_agency_payload = strtoul(opts[i].value, NULL, 10);
        } else if (strcmp(opts[i].key, "log_burst") == 0) {
            burst = atof(opts[i].value);
        } else if (strcmp(opts[i].key, "log_per_second") == 0) {
            per_second = atof(opts[i].value);
        }
    }
    logins.tokens = topics.tokens = burst;
    logins.last = topics.last = now_s();
    if (mosquitto_callback_register(id, EVT_BASIC_AUTH, on_auth, NULL, NULL)) return 1;
    if (mosquitto_callback_register(id, EVT_ACL_CHECK, on_acl, NULL, NULL)) return 1;
    mosquitto_log_printf(LOG_WARNING, "i24net: guard loaded: client ids bound to accounts "
                         "(router '%s', agency payloads up to %lu bytes)",
                         router_user, max_agency_payload);
    return 0;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int count) {
    (void)userdata; (void)opts; (void)count;
    mosquitto_callback_unregister(plugin_id, EVT_BASIC_AUTH, on_auth, NULL);
    mosquitto_callback_unregister(plugin_id, EVT_ACL_CHECK, on_acl, NULL);
    return 0;
}
"""

_COMPILERS = ("cc", "gcc", "clang")


def find_compiler() -> str | None:
    """The system C compiler (``cc``, ``gcc`` or ``clang`` on PATH), or ``None``."""
    for name in _COMPILERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_guard(directory: Path, compiler: str | None = None) -> Path:
    """The compiled plugin in ``directory`` (``i24net-guard-<digest>.so``), built now if this
    source version has not been built there; raises ``BrokerConfigError`` without a compiler
    or if the build fails, with the compiler's message."""
    digest = hashlib.sha256(GUARD_SOURCE.encode()).hexdigest()[:16]
    library = Path(directory) / f"i24net-guard-{digest}.so"
    if library.exists():
        return library
    cc = compiler or find_compiler()
    if cc is None:
        raise BrokerConfigError(
            "no C compiler (cc, gcc or clang) to build i24net's Mosquitto plugin, which binds "
            "client ids to accounts: install one (Debian: apt-get install gcc), or start "
            "Mosquitto with guard=False (docs/security.md says what is lost)"
        )
    source = library.with_suffix(".c")
    source.write_text(GUARD_SOURCE, encoding="utf-8")
    partial = library.with_name(f".{library.name}.tmp")
    try:
        result = subprocess.run(
            [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(source)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerConfigError(f"building the Mosquitto plugin with {cc} failed: {exc}") from exc
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BrokerConfigError(
            f"building the Mosquitto plugin {source} with {cc} failed:\n"
            f"{(result.stderr or result.stdout).strip()}"
        )
    partial.replace(library)
    return library
