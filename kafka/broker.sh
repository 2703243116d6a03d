#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1,
# for flwire's development, tests and CI. No Docker: the broker's jars come from Maven Central
# (see kafka/pom.xml) into a cache folder outside git.
#
#   bash kafka/broker.sh fetch|up|down|kill|status|reset [--secure]
#   bash kafka/broker.sh acl-job <job_id> [client ...] --secure
#
# --secure: the secured broker (SASL_SSL + SCRAM-SHA-512, StandardAuthorizer, ACLs) on its own
# port and data dir; CA, broker certificate and SCRAM passwords are generated on first start into
# $FLWIRE_KAFKA_HOME/secure/ (ca.crt for clients' ssl.ca.location; users.properties, mode 0600).
# acl-job creates a job's topics and grants its ACLs (python -m flwire.transport.kafka_acl).
#
# Environment:
#   FLWIRE_KAFKA_HOME             cache dir (jars, data, logs, pid)   default $HOME/.cache/flwire/kafka
#   FLWIRE_KAFKA_PORT             broker (PLAINTEXT) port             default 9092
#   FLWIRE_KAFKA_CONTROLLER_PORT  KRaft controller port               default FLWIRE_KAFKA_PORT + 1
#   FLWIRE_KAFKA_HEAP             JVM max heap                        default 768m
#   FLWIRE_KAFKA_START_TIMEOUT    seconds `up` waits for the broker   default 60
#   FLWIRE_KAFKA_JVM_OPTS         extra JVM options for the broker    default -XX:TieredStopAtLevel=1
#                                 (C1 JIT only: half the start time on 2 busy cores; set '' for C2)
#   FLWIRE_PYTHON                 python used for the readiness probe when it has confluent_kafka
#                                 default <repo>/.venv/bin/python (else a small Java probe is used)
#   FLWIRE_KAFKA_SECURE_PORT      --secure: SASL_SSL port             default 9094
#   FLWIRE_KAFKA_SECURE_CONTROLLER_PORT  --secure: controller (mTLS)  default FLWIRE_KAFKA_SECURE_PORT + 1
#   FLWIRE_KAFKA_SECURE_CLIENTS   --secure: SCRAM users client-1..N   default 4 (read at format time)
#   FLWIRE_KAFKA_MESSAGE_MAX_BYTES  raise the broker's record limit (message.max.bytes, and with it
#                                 replica.fetch.max.bytes and socket.request.max.bytes) to this many
#                                 bytes; default unset = the broker default (1048588). Only for
#                                 the private broker of python -m benchmarks.e2e, so that the legacy path's
#                                 single big JSON records can run at all; raise FLWIRE_KAFKA_HEAP too.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
POM="$HERE/pom.xml"
CACHE="${FLWIRE_KAFKA_HOME:-$HOME/.cache/flwire/kafka}"
SECURE=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --secure) SECURE=1 ;;
        *) ARGS+=("$arg") ;;
    esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
if ((SECURE)); then
    PORT="${FLWIRE_KAFKA_SECURE_PORT:-9094}"
    CPORT="${FLWIRE_KAFKA_SECURE_CONTROLLER_PORT:-$((PORT + 1))}"
else
    PORT="${FLWIRE_KAFKA_PORT:-9092}"
    CPORT="${FLWIRE_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
fi
HEAP="${FLWIRE_KAFKA_HEAP:-768m}"
START_TIMEOUT="${FLWIRE_KAFKA_START_TIMEOUT:-60}"
PYTHON="${FLWIRE_PYTHON:-$REPO/.venv/bin/python}"
MESSAGE_MAX_BYTES="${FLWIRE_KAFKA_MESSAGE_MAX_BYTES:-}"
HOST=127.0.0.1

LIB="$CACHE/lib"
STAMP="$LIB/.flwire-stamp"
DATA="$CACHE/data-$PORT"
LOGS="$CACHE/logs-$PORT"
CONF="$CACHE/config-$PORT"
PIDFILE="$CACHE/broker-$PORT.pid"
PROBE_DIR="$CACHE/probe"
# --secure: the CA, the broker's key pair and the SCRAM passwords (shared by every secure port).
SECDIR="$CACHE/secure"
CA_CRT="$SECDIR/ca.crt"
USERS="$SECDIR/users.properties"
KEYSTORE="$SECDIR/broker.p12"
# In the data dir: the sha256 of users.properties it was formatted with (secure data dirs only).
SECURE_STAMP="$DATA/.flwire-secure"
ADMIN_PROPS="$CONF/admin-client.properties"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"; JAVAC="$JAVA_HOME/bin/javac"
else
    JAVA=java; JAVAC=javac
fi

say() { echo "kafka: $*"; }
die() { echo "kafka: error: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

pom_prop() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$POM" | head -n1; }

# The stamp names the pinned versions and the pom's hash: a pom change means a new download.
wanted_stamp() {
    echo "kafka_2.13=$(pom_prop kafka.version) log4j=$(pom_prop log4j.version) slf4j-api=$(pom_prop slf4j.version) pom-sha256=$(sha256sum "$POM" | cut -d' ' -f1)"
}

cmd_fetch() {
    mkdir -p "$CACHE"
    local want; want="$(wanted_stamp)"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: Maven 3 and Java 17+ are needed to fetch the broker's jars"
    (
        flock 9
        # Another fetch may have finished while we waited for the lock.
        if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then exit 0; fi
        say "fetching Kafka $(pom_prop kafka.version) jars into $LIB (Maven Central) ..."
        local t0 tmp; t0=$(now_ms); tmp="$CACHE/lib.tmp.$$"
        rm -rf "$tmp"
        # copy-dependencies writes only to outputDirectory (no target/ next to the pom); the jars
        # also stay in Maven's local repository (~/.m2), so a re-fetch is offline and quick.
        if ! (cd "$CACHE" && mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
                -DoutputDirectory="$tmp" -DincludeScope=runtime) >"$CACHE/fetch.log" 2>&1; then
            rm -rf "$tmp"
            cat "$CACHE/fetch.log" >&2
            die "mvn dependency:copy-dependencies failed (network to Maven Central? output above, also in $CACHE/fetch.log)"
        fi
        ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no kafka_2.13 jar after fetch"; }
        echo "$want" >"$tmp/.flwire-stamp"
        rm -rf "$LIB"
        mv "$tmp" "$LIB"
        say "fetched $(find "$LIB" -name "*.jar" | wc -l) jars in $(( ($(now_ms) - t0) / 1000 )) s"
    ) 9>"$CACHE/.fetch.lock"
}

# pid of our broker on PORT if it runs, else nothing (and a stale pid file is removed).
broker_pid() {
    [[ -f "$PIDFILE" ]] || return 0
    local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'; then
        echo "$pid"
    else
        rm -f "$PIDFILE"
    fi
}

# kill -0 alone is not enough: a broker that died while 'up' waits is a zombie child until reaped.
alive() {
    local st
    st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$st" && "$st" != Z ]]
}

port_open() { bash -c "</dev/tcp/$HOST/$1" 2>/dev/null; }

# A killed JVM can still hold its listening sockets for a moment while its threads exit.
wait_ports_closed() {
    local i
    for ((i = 0; i < 100; i++)); do
        port_open "$PORT" || port_open "$CPORT" || return 0
        sleep 0.1
    done
    return 1
}

# --secure: the users with a SCRAM credential (admin is the super user).
secure_users() {
    local n="${FLWIRE_KAFKA_SECURE_CLIENTS:-4}" i
    [[ "$n" =~ ^[0-9]+$ ]] || die "FLWIRE_KAFKA_SECURE_CLIENTS must be a number, got '$n'"
    echo admin server
    for ((i = 1; i <= n; i++)); do echo "client-$i"; done
}

user_password() { sed -n "s/^$1=//p" "$USERS" | head -n1; }

# --secure: on first start, a CA, the broker's certificate (signed by it, for 127.0.0.1 and
# localhost) in a PKCS12 keystore, and a random password per SCRAM user. Never in git: all in
# $SECDIR (mode 0700; keys and passwords 0600). Users missing from users.properties are added.
ensure_secrets() {
    mkdir -p "$SECDIR"
    chmod 700 "$SECDIR"
    (
        flock 7
        umask 077
        command -v openssl >/dev/null || die "openssl not found: --secure needs it to make the CA and the broker certificate"
        if [[ ! -f "$CA_CRT" || ! -f "$KEYSTORE" || ! -f "$SECDIR/keystore.pass" ]]; then
            local t0; t0=$(now_ms)
            rm -f "$SECDIR"/ca.* "$SECDIR"/broker.* "$SECDIR/keystore.pass"
            openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$SECDIR/ca.key" -out "$CA_CRT" -days 3650 -subj "/CN=flwire-dev-ca" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
                >"$SECDIR/openssl.log" 2>&1 || { cat "$SECDIR/openssl.log" >&2; die "making the CA failed"; }
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$SECDIR/broker.key" -out "$SECDIR/broker.csr" -subj "/CN=flwire-broker" \
                >>"$SECDIR/openssl.log" 2>&1 || { cat "$SECDIR/openssl.log" >&2; die "making the broker key failed"; }
            printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyAgreement" "extendedKeyUsage=serverAuth,clientAuth" \
                >"$SECDIR/broker.ext"
            openssl x509 -req -in "$SECDIR/broker.csr" -CA "$CA_CRT" -CAkey "$SECDIR/ca.key" -CAcreateserial \
                -out "$SECDIR/broker.crt" -days 825 -extfile "$SECDIR/broker.ext" \
                >>"$SECDIR/openssl.log" 2>&1 || { cat "$SECDIR/openssl.log" >&2; die "signing the broker certificate failed"; }
            openssl rand -hex 16 >"$SECDIR/keystore.pass"
            openssl pkcs12 -export -in "$SECDIR/broker.crt" -inkey "$SECDIR/broker.key" -certfile "$CA_CRT" \
                -name broker -out "$KEYSTORE" -passout "file:$SECDIR/keystore.pass" \
                >>"$SECDIR/openssl.log" 2>&1 || { cat "$SECDIR/openssl.log" >&2; die "writing the broker keystore failed"; }
            chmod 644 "$CA_CRT"
            say "made a CA ($CA_CRT) and the broker certificate in $(( $(now_ms) - t0 )) ms"
        fi
        touch "$USERS"
        chmod 600 "$USERS"
        local user
        for user in $(secure_users); do
            if [[ -z "$(user_password "$user")" ]]; then
                echo "$user=$(openssl rand -hex 16)" >>"$USERS"
            fi
        done
    ) 7>"$CACHE/.secure.lock"
}

write_config() {
    mkdir -p "$CONF" "$LOGS" "$DATA"
    local listener=PLAINTEXT cproto=PLAINTEXT auto_create=true
    if ((SECURE)); then listener=SASL_SSL cproto=SSL auto_create=false; fi
    # It holds the keystore's and the admin's passwords with --secure.
    (umask 077 && : >"$CONF/server.properties")
    chmod 600 "$CONF/server.properties"
    cat >"$CONF/server.properties" <<EOF
# Written by kafka/broker.sh: single combined KRaft node for flwire tests. Regenerated on every 'up'.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CPORT
listeners=$listener://$HOST:$PORT,CONTROLLER://$HOST:$CPORT
advertised.listeners=$listener://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=$listener
listener.security.protocol.map=$listener:$listener,CONTROLLER:$cproto
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=$auto_create
# One node: every internal topic has replication factor and min ISR 1.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions: the first consumer group / transaction is ready sooner (default 50 each).
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.num.partitions=1
# Consumer groups join at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
# After a crash ('kill'), the restarted node is refused (DUPLICATE_BROKER_REGISTRATION) until its old
# broker session expires: default 9 s. A 3 s session makes crash-restart tests ~6 s faster.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# A deleted topic's files go after 1 s instead of 60 s: benchmarks and tests delete their topics,
# and on a 2-core VM 60 s of them (gigabytes) reached the disk's writeback while later runs timed.
log.segment.delete.delay.ms=1000
# message.max.bytes is deliberately left at the broker default (1048588): flwire must work through it.
EOF
    if ((SECURE)); then
        local ks_pass admin_pass
        ks_pass="$(cat "$SECDIR/keystore.pass")"
        admin_pass="$(user_password admin)"
        cat >>"$CONF/server.properties" <<EOF
# --secure: clients authenticate with SCRAM-SHA-512 over TLS; the controller listener takes only
# the broker's own certificate (mutual TLS, principal User:CN=flwire-broker).
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pass";
ssl.keystore.type=PKCS12
ssl.keystore.location=$KEYSTORE
ssl.keystore.password=$ks_pass
ssl.key.password=$ks_pass
ssl.truststore.type=PEM
ssl.truststore.location=$CA_CRT
listener.name.controller.ssl.client.auth=required
# ACLs: nothing is allowed that no ACL allows, except to the super users.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:CN=flwire-broker
allow.everyone.if.no.acl.found=false
EOF
        (umask 077 && cat >"$ADMIN_PROPS" <<EOF
# The admin user's client settings for Kafka's Java tools (--command-config) and the Java probe.
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pass";
ssl.truststore.type=PEM
ssl.truststore.location=$CA_CRT
EOF
        )
    fi
    if [[ -n "$MESSAGE_MAX_BYTES" ]]; then
        [[ "$MESSAGE_MAX_BYTES" =~ ^[0-9]+$ ]] \
            || die "FLWIRE_KAFKA_MESSAGE_MAX_BYTES must be a number of bytes, got '$MESSAGE_MAX_BYTES'"
        # A request carries the record plus framing; the broker's cap on one request is an int.
        local request_max=$((MESSAGE_MAX_BYTES + 1048576))
        ((request_max <= 2147483647)) || request_max=2147483647
        cat >>"$CONF/server.properties" <<EOF
# FLWIRE_KAFKA_MESSAGE_MAX_BYTES is set: the record limit is raised (benchmark of the old one-record path).
message.max.bytes=$MESSAGE_MAX_BYTES
replica.fetch.max.bytes=$MESSAGE_MAX_BYTES
socket.request.max.bytes=$request_max
EOF
    fi
}

# One readiness probe: a real metadata request. confluent-kafka if the venv has it, else Java.
probe() {
    local timeout_s="$1"
    local users="" ca=""
    if ((SECURE)); then users="$USERS" ca="$CA_CRT"; fi
    if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import confluent_kafka' 2>/dev/null; then
        "$PYTHON" - "$HOST:$PORT" "$timeout_s" "$users" "$ca" <<'PY'
import sys
from confluent_kafka.admin import AdminClient
config = {"bootstrap.servers": sys.argv[1], "log_level": 0}
if sys.argv[3]:  # --secure: as the admin user, over TLS with the generated CA
    with open(sys.argv[3], encoding="utf-8") as f:
        users = dict(line.strip().split("=", 1) for line in f if "=" in line)
    config.update({"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
                   "sasl.username": "admin", "sasl.password": users["admin"],
                   "ssl.ca.location": sys.argv[4]})
md = AdminClient(config).list_topics(timeout=float(sys.argv[2]))
print(f"metadata ok: {len(md.brokers)} node(s), {len(md.topics)} topic(s)")
PY
    else
        local sum; sum="$(sha256sum "$HERE/Ready.java" | cut -d' ' -f1)"
        if [[ ! -f "$PROBE_DIR/Ready.class" || "$(cat "$PROBE_DIR/.src-sha256" 2>/dev/null)" != "$sum" ]]; then
            rm -rf "$PROBE_DIR"; mkdir -p "$PROBE_DIR"
            "$JAVAC" -nowarn -cp "$LIB/*" -d "$PROBE_DIR" "$HERE/Ready.java"
            echo "$sum" >"$PROBE_DIR/.src-sha256"
        fi
        local props=()
        if ((SECURE)); then props=("$ADMIN_PROPS"); fi
        "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j2.level=ERROR -cp "$PROBE_DIR:$LIB/*" Ready \
            "$HOST:$PORT" "$((timeout_s * 1000))" "${props[@]+"${props[@]}"}"
    fi
}

fail_start() {
    echo "kafka: error: $1" >&2
    if [[ -f "$LOGS/server.log" ]]; then
        echo "---- last 40 lines of $LOGS/server.log ----" >&2
        tail -n 40 "$LOGS/server.log" >&2
    fi
    if [[ -s "$LOGS/stdout.log" ]]; then
        echo "---- last 20 lines of $LOGS/stdout.log (JVM output) ----" >&2
        tail -n 20 "$LOGS/stdout.log" >&2
    fi
    echo "kafka: look at $LOGS/server.log and $LOGS/stdout.log; config $CONF/server.properties; data $DATA" >&2
    echo "kafka: 'bash kafka/broker.sh reset' starts from an empty data dir" >&2
    exit 1
}

cmd_up() {
    local t0; t0=$(now_ms)
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.lock-$PORT"
    flock 8
    local pid; pid="$(broker_pid)"
    if [[ -n "$pid" ]]; then
        say "already running on $HOST:$PORT (pid $pid)"
        return 0
    fi
    wait_ports_closed || true
    for p in "$PORT" "$CPORT"; do
        if port_open "$p"; then
            die "port $HOST:$p is taken by another process (not our broker): stop it or set FLWIRE_KAFKA_PORT"
        fi
    done
    command -v "$JAVA" >/dev/null || die "java not found: the broker needs Java 17+ (set JAVA_HOME or PATH)"
    cmd_fetch
    if ((SECURE)); then ensure_secrets; fi
    check_data_mode
    write_config
    if [[ ! -f "$DATA/meta.properties" ]]; then
        local cid; cid="$("$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.level=ERROR -cp "$LIB/*" kafka.tools.StorageTool random-uuid)"
        local scram=() user
        if ((SECURE)); then
            # SCRAM credentials go into the cluster's first metadata: the users exist from the start.
            for user in $(secure_users); do
                scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(user_password "$user")]")
            done
        fi
        "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.level=ERROR -cp "$LIB/*" kafka.tools.StorageTool format --standalone \
            --ignore-formatted -t "$cid" -c "$CONF/server.properties" "${scram[@]+"${scram[@]}"}" >"$LOGS/format.log" 2>&1 \
            || { cat "$LOGS/format.log" >&2; die "formatting $DATA failed"; }
        if ((SECURE)); then sha256sum "$USERS" | cut -d' ' -f1 >"$SECURE_STAMP"; fi
        say "formatted $DATA (cluster id $cid)${scram[*]+, SCRAM users: $(secure_users | tr '\n' ' ')}"
    fi
    : >"$LOGS/stdout.log"
    # setsid: the broker leaves the caller's process group (Ctrl-C in the shell that ran 'up' does not reach it).
    # 8>&-: the broker must not inherit the lock.
    # shellcheck disable=SC2086  # FLWIRE_KAFKA_JVM_OPTS is a list of options
    setsid "$JAVA" -Xmx"$HEAP" -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        ${FLWIRE_KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1} \
        -Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$HERE/log4j2.xml" \
        -cp "$LIB/*" kafka.Kafka "$CONF/server.properties" \
        </dev/null >>"$LOGS/stdout.log" 2>&1 8>&- &
    pid=$!
    disown "$pid"   # no "Killed" job notice from this shell if the start times out
    echo "$pid" >"$PIDFILE"

    local deadline=$(( $(date +%s) + START_TIMEOUT ))
    while :; do
        if ! alive "$pid"; then
            rm -f "$PIDFILE"
            fail_start "the broker process (pid $pid) exited during startup"
        fi
        if port_open "$PORT" && probe 5 >"$LOGS/probe.log" 2>&1; then
            break
        fi
        if (( $(date +%s) >= deadline )); then
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            fail_start "the broker did not answer a metadata request on $HOST:$PORT within ${START_TIMEOUT}s (killed it)"
        fi
        sleep 0.3
    done
    local ms=$(( $(now_ms) - t0 ))
    local kind=""; ((SECURE)) && kind=" (SASL_SSL, SCRAM-SHA-512, ACLs)"
    say "up on $HOST:$PORT$kind (pid $pid, controller $HOST:$CPORT) in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s; $(cat "$LOGS/probe.log")"
    say "log $LOGS/server.log, data $DATA"
    if ((SECURE)); then
        say "CA certificate (ssl.ca.location): $CA_CRT"
        say "SCRAM users and passwords (mode 0600): $USERS"
    fi
}

# A data dir is formatted for one mode: a secure one holds the SCRAM users of the users.properties
# it was formatted with (its sha256 in $SECURE_STAMP).
check_data_mode() {
    [[ -f "$DATA/meta.properties" ]] || return 0
    local flag=""; ((SECURE)) && flag=" --secure"
    if ((SECURE)); then
        [[ -f "$SECURE_STAMP" ]] \
            || die "$DATA was formatted for a plaintext broker; 'bash kafka/broker.sh reset$flag' (or another FLWIRE_KAFKA_SECURE_PORT)"
        [[ "$(cat "$SECURE_STAMP")" == "$(sha256sum "$USERS" | cut -d' ' -f1)" ]] \
            || die "$DATA was formatted with other SCRAM users/passwords than $USERS; 'bash kafka/broker.sh reset$flag' formats it again"
    elif [[ -f "$SECURE_STAMP" ]]; then
        die "$DATA was formatted for the secure broker; use --secure, or 'bash kafka/broker.sh reset' (or another FLWIRE_KAFKA_PORT)"
    fi
}

cmd_down() {
    local pid; pid="$(broker_pid)"
    if [[ -z "$pid" ]]; then
        say "not running on port $PORT"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "no clean shutdown within 30 s; sending SIGKILL to pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.1; done
    else
        say "stopped (pid $pid)"
    fi
    rm -f "$PIDFILE"
    wait_ports_closed || say "warning: port $PORT or $CPORT still open 10 s after the broker exited"
}

cmd_kill() {
    local pid; pid="$(broker_pid)"
    if [[ -z "$pid" ]]; then
        say "not running on port $PORT"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
    rm -f "$PIDFILE"
    wait_ports_closed || say "warning: port $PORT or $CPORT still open 10 s after the broker was killed"
    say "killed (SIGKILL, pid $pid)"
}

cmd_status() {
    local pid; pid="$(broker_pid)"
    if [[ -n "$pid" ]]; then
        say "running on $HOST:$PORT (pid $pid)"
    else
        say "not running on port $PORT"
        return 1
    fi
}

cmd_reset() {
    cmd_down
    rm -rf "$DATA"
    say "deleted $DATA (the next 'up' formats a fresh cluster)"
}

# acl-job <job_id> [client ...]: create the job's topics and grant its ACLs on the secure broker
# (default clients: every client-N user in users.properties).
cmd_acl_job() {
    ((SECURE)) || die "acl-job needs --secure (the plaintext broker has no ACLs)"
    (($# >= 1)) || die "usage: bash kafka/broker.sh acl-job <job_id> [client ...] --secure"
    [[ -n "$(broker_pid)" ]] || die "the secure broker is not running on port $PORT: bash kafka/broker.sh up --secure"
    local job="$1"; shift
    local clients=("$@")
    if ((${#clients[@]} == 0)); then
        mapfile -t clients < <(sed -n 's/^\(client-[0-9]*\)=.*/\1/p' "$USERS")
    fi
    "$PYTHON" -m flwire.transport.kafka_acl --bootstrap "$HOST:$PORT" --users "$USERS" \
        --ca "$CA_CRT" --job "$job" --server server "${clients[@]}"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 2
}

case "${1:-}" in
    fetch) cmd_fetch; say "jars ready in $LIB ($(cat "$STAMP"))" ;;
    up) cmd_up ;;
    down) cmd_down ;;
    kill) cmd_kill ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    acl-job) shift; cmd_acl_job "$@" ;;
    *) usage ;;
esac
