#!/usr/bin/env bash
# Records the replay fixtures from real runs of the regent binary.
#
# Each scenario runs the real `regent` against a real vault service (`regent vault serve` on
# 127.0.0.1, port 0) and, where it needs one, a real tinyproxy with BasicAuth, in a fresh data dir;
# then exports the log (`regent audit export`) to NAME.jsonl and writes NAME.expected.json: the
# phase and last failure the scenario was written to produce, checked against the live
# `regent status --json` of the run before anything is written (a scenario that did not do what it
# says fails the recording). Two fixtures are rewrites of a recorded one (see
# store/examples/rewrite.rs): a log as schema 1 wrote it, and a log from a build with another
# passphrase rule (the divergence).
#
# Fixtures of older builds (schema-2: a log written before registrations were started and the
# passphrase verifier sealed; schema-3: one whose steps name no build; schema-4: one from before
# unregistrations told the vault) cannot come from this build
# either: they are kept as recorded.
#
# Usage: replay-fixtures/record.sh        (needs cargo, python3, tinyproxy, curl, and root for
#                                          `unshare --uts`, which gives one run another host name;
#                                          about 20 s after the build)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cargo build --quiet --release -p regent-cli --manifest-path "$root/Cargo.toml"
cargo build --quiet --release -p regent-store --example rewrite --manifest-path "$root/Cargo.toml"
target=$(cargo metadata --quiet --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release/regent"
rewrite="$target/release/examples/rewrite"
command -v tinyproxy >/dev/null || { echo "record.sh: tinyproxy is needed (apt-get install -y tinyproxy)" >&2; exit 1; }
unshare --uts true 2>/dev/null || { echo "record.sh: run as root: a scenario needs \`unshare --uts\` (another host name)" >&2; exit 1; }

work=$(mktemp -d /tmp/regent-fixtures.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
export NO_COLOR=1
out="$work/fixtures" # recorded here, and moved beside this script only when every scenario did
mkdir -p "$out"
unset REGENT_DATA_DIR

# The vault service, and the address it prints.
"$bin" vault serve --data-dir "$work/vault" --listen 127.0.0.1:0 --json >"$work/vault.out" 2>"$work/vault.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/vault.out" ] && break; sleep 0.1; done
vault=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["url"])' "$work/vault.out")
token="$work/vault/admin.token"
admin() { "$bin" --data-dir "$work/admin" vault "$@" --server "$vault" --token-file "$token"; }
admin create prod >/dev/null
admin create other >/dev/null

# A tinyproxy with BasicAuth on a free port.
proxy_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
proxy_password="proxy-pass-for-fixtures"
cat >"$work/tinyproxy.conf" <<EOF
Port $proxy_port
Listen 127.0.0.1
Timeout 30
LogFile "$work/tinyproxy.log"
LogLevel Info
BasicAuth fixtures $proxy_password
EOF
tinyproxy -d -c "$work/tinyproxy.conf" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$proxy_port" 2>/dev/null && break
    sleep 0.1
done

# Between the agent and the vault: the vault's answers lost after it did the work.
cutter_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 "$here/lose_answers.py" "$cutter_port" "$vault" &
pids+=($!)
for _ in $(seq 100); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$cutter_port" 2>/dev/null && break
    sleep 0.1
done

download() { # VAULT NAME [VALIDITY]: a new download, which supersedes every earlier one of the vault
    local file="$work/$2-$(date +%s%N).VaultCredentials"
    admin credentials --vault "$1" --output "$file" --validity "${3:-48h}" >/dev/null
    echo "$file"
}
fresh_credentials=$(download prod newest)

# --- steps, run in the scenario's data dir ($agent); a refusal is part of the scenario ---
agent=""
r() { "$bin" --data-dir "$agent" "$@" >/dev/null 2>>"$agent.stderr" || true; }
folders() { r folders --install-dir "$agent-install" --scratch-dir "$agent-scratch" --backup-size "${1:-1GiB}"; }
credentials() { r credentials load "${1:-$fresh_credentials}"; }
passphrase() { printf '%s\n' "${1:-a good long passphrase for fixtures}" | r passphrase set --passphrase-stdin; }
register() { r register "$@"; }
prepared() { folders; credentials; passphrase; }

# record NAME PHASE LAST_FAILURE DESCRIPTION: checks the live status, exports, writes the expectation.
record() {
    local name=$1 phase=$2 failure=$3 description=$4
    "$bin" --data-dir "$agent" --json status >"$agent.status"
    "$bin" --data-dir "$agent" audit export --output "$out/$name.jsonl"
    python3 - "$agent.status" "$out/$name.expected.json" "$phase" "$failure" "$description" "$name" <<'EOF'
import json, sys
status_file, out, phase, failure, description, name = sys.argv[1:]
status = json.load(open(status_file))
failure = None if failure == "-" else failure
got = (status["last_failure"] or {}).get("reason")
if status["phase"] != phase or got != failure:
    sys.exit(f"record.sh: {name}: the run ended in phase {status['phase']} with last failure {got}, "
             f"not {phase} / {failure} as the scenario intends")
expected = {"description": description, "phase": phase, "last_failure": failure,
            "events": status["events"], "check": {"diverged": False}}
with open(out, "w") as f:
    json.dump(expected, f, indent=2)
    f.write("\n")
EOF
    echo "recorded $name: $phase, last failure ${failure/-/none}, $(($(wc -l <"$out/$name.jsonl") - 1)) events"
}
scenario() { agent="$work/agents/$1"; mkdir -p "$work/agents"; }

# --- successful registrations and a Change Properties session ---
scenario registered
folders; credentials; r passphrase generate --save-to "$agent-passphrase.txt"; register
record registered registered - "folders, credentials, a generated passphrase, registered"

scenario registered-through-proxy
r proxy clear
printf '%s\n' "$proxy_password" | r proxy set --host 127.0.0.1 --port "$proxy_port" --username fixtures --password-stdin
prepared; register
record registered-through-proxy registered - "registered through tinyproxy with BasicAuth (the password sealed, never in the log)"

scenario change-properties
prepared; register
printf '%s\n' "$proxy_password" | r properties proxy set --host 127.0.0.1 --port "$proxy_port" --username fixtures --password-stdin
r properties throttling set --work-days mon-fri --work-hours 09:00-17:00 --work-bandwidth 20Mbps --non-work-bandwidth 100Mbps
r properties scratch-dir "$agent-scratch2"
pin=$(admin pin --vault prod 2>/dev/null)
printf '%s\n' "the new passphrase after a change" |
    PIN=$pin "$bin" --data-dir "$agent" properties passphrase change --passphrase-stdin --security-pin-env PIN >/dev/null
r properties throttling off
r properties proxy clear
record change-properties registered - "registered, then proxy, throttling, scratch folder, passphrase change with a PIN, throttling off, proxy cleared"

# --- one fixture per reason code ---
scenario invalid_folder
touch "$agent-a-file"
r folders --install-dir "$agent-a-file" --scratch-dir "$agent-scratch" --backup-size 1GiB
record invalid_folder new invalid_folder "the install folder is a file"

scenario insufficient_scratch_space
folders 1PB
record insufficient_scratch_space new insufficient_scratch_space "1 PB of backup data needs 50 TB free in the scratch folder"

scenario invalid_proxy
r proxy set --host 127.0.0.1 --port 70000
record invalid_proxy new invalid_proxy "a proxy port out of range"

scenario credentials_unreadable
folders; credentials "$work/no-such.VaultCredentials"
record credentials_unreadable folders_chosen credentials_unreadable "the credentials file does not exist"

scenario credentials_invalid
printf '<RSBackupVaultAADCreds><VaultName>x</VaultName></RSBackupVaultAADCreds>\n' >"$agent-bad.VaultCredentials"
folders; credentials "$agent-bad.VaultCredentials"
record credentials_invalid folders_chosen credentials_invalid "a credentials file with most fields missing"

scenario credentials_expired
short=$(download prod short 1s)
sleep 2
folders; credentials "$short"
fresh_credentials=$(download prod newest) # the short download superseded the newest one
record credentials_expired folders_chosen credentials_expired "credentials downloaded with a validity of one second, loaded two seconds later"

scenario credentials_superseded
stale=$(download prod stale)
fresh_credentials=$(download prod newest)
folders; credentials "$stale"; passphrase; register
record credentials_superseded passphrase_created credentials_superseded "credentials loaded from a download older than the newest"

scenario credentials_wrong_vault
other=$(download other other)
prepared; register; credentials "$other"
record credentials_wrong_vault registered credentials_wrong_vault "registered to prod, then credentials of another vault loaded"

scenario passphrase_too_short
folders; credentials; passphrase "only 10 ch"
record passphrase_too_short credentials_loaded passphrase_too_short "a 10-character passphrase"

scenario passphrase_invalid
folders; credentials; passphrase "une phrase de passe très longue"
record passphrase_invalid credentials_loaded passphrase_invalid "a passphrase with a non-ASCII character"

scenario proxy_auth_failed
printf '%s\n' "not the proxy password" | r proxy set --host 127.0.0.1 --port "$proxy_port" --username fixtures --password-stdin
prepared; register
record proxy_auth_failed passphrase_created proxy_auth_failed "tinyproxy refuses the proxy password"

scenario vault_unreachable
prepared; register --endpoint http://127.0.0.1:1
record vault_unreachable passphrase_created vault_unreachable "nothing listens at the vault endpoint"

scenario vault_error
prepared; register --endpoint "$vault/not-the-api"
record vault_error passphrase_created vault_error "an endpoint with a path the vault service does not serve (HTTP 404)"

scenario vault_tls_failed
prepared; register --endpoint "https://${vault#http://}"
record vault_tls_failed passphrase_created vault_tls_failed "https:// to the vault service, which speaks plain HTTP: no TLS at the other end"

scenario already_registered
prepared; register; register
record already_registered registered already_registered "register run twice"

scenario step_out_of_order
register
record step_out_of_order new step_out_of_order "register on a fresh machine"

scenario security_pin_invalid
prepared; register
printf '%s\n' "the new passphrase after a change" |
    PIN=00000000 "$bin" --data-dir "$agent" properties passphrase change --passphrase-stdin --security-pin-env PIN >/dev/null 2>&1 || true
record security_pin_invalid registered security_pin_invalid "a passphrase change with a PIN the vault never issued"

# The vault made the machine, the answer was lost: the registration stays started, with its
# request id. A copy of that data dir on another host asks with the same request id.
scenario lost-answer
machines_before=$(admin machines --vault prod --json)
prepared; register --endpoint "http://127.0.0.1:$cutter_port"
lost="$agent"
# The machine the vault made for it: the one it did not list before.
lost_machine=$(admin machines --vault prod --json | python3 -c 'import json, sys; before = {m["machine_id"] for m in json.loads(sys.argv[1])}; print(*[m["machine_id"] for m in json.load(sys.stdin) if m["machine_id"] not in before])' "$machines_before")
record lost-answer passphrase_created vault_unreachable "registered through a front that drops the vault's answer: the registration stays started"

scenario request_id_conflict
cp -r "$lost" "$agent"
unshare --uts sh -c 'hostname clone-of-the-image && exec "$@"' sh \
    "$bin" --data-dir "$agent" register --endpoint "$vault" >/dev/null 2>>"$agent.stderr" || true
record request_id_conflict passphrase_created request_id_conflict "a copy of a data dir whose registration was started, run on a server with another host name"

scenario machine_removed
agent="$lost"
curl -fsS -X DELETE -H "Authorization: Bearer $(cat "$token")" "$vault/v1/vaults/prod/machines/$lost_machine" >/dev/null
register --endpoint "$vault"
record machine_removed passphrase_created machine_removed "the registration whose answer was lost, asked again after the admin removed its machine"

scenario invalid_throttling
prepared; register
r properties throttling set --work-days mon-fri --work-hours 09:00-17:00 --work-bandwidth 100Kbps --non-work-bandwidth 20Mbps
record invalid_throttling registered invalid_throttling "a work-hours bandwidth under 512 Kbps"

# --- rewrites of a recorded log (store/examples/rewrite.rs says why) ---
"$rewrite" schema-1 "$out/registered.jsonl" "$out/schema-1.jsonl" 1GiB
python3 - "$out/registered.expected.json" "$out/schema-1.expected.json" <<'EOF'
import json, sys
expected = json.load(open(sys.argv[1]))
expected["description"] = "the registered fixture with its folders event as schema 1 wrote it (backup_size as typed), upcast on read"
expected["backup_size_bytes"] = 1073741824
expected["oldest_schema"] = 1
json.dump(expected, open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
EOF
echo "recorded schema-1 (from registered)"

"$rewrite" short-12 "$out/registered-through-proxy.jsonl" "$out/divergence.jsonl"
python3 - "$out/registered-through-proxy.expected.json" "$out/divergence.expected.json" "$out/divergence.jsonl" <<'EOF'
import json, sys
expected = json.load(open(sys.argv[1]))
position = next(json.loads(l[l.index('"record":') + 9:-1])["position"]
                for l in open(sys.argv[3]).read().splitlines()[1:] if '"command":"set_passphrase"' in l)
expected["description"] = ("registered-through-proxy as a build whose passphrase minimum was 12 characters recorded it: "
                           "a typed 12-character passphrase accepted, which this build refuses")
expected["check"] = {"diverged": True, "position": position, "now_decides": "passphrase_too_short"}
json.dump(expected, open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
EOF
echo "recorded divergence (from registered-through-proxy)"

# Every scenario did what it says: replace the fixtures (one whose scenario is gone goes too), but
# those of older builds.
kept=(schema-2 schema-3 schema-4)
for name in "${kept[@]}"; do mv "$here/$name.jsonl" "$here/$name.expected.json" "$work/"; done
rm -f "$here"/*.jsonl "$here"/*.expected.json
mv "$out"/* "$here"/
for name in "${kept[@]}"; do mv "$work/$name.jsonl" "$work/$name.expected.json" "$here/"; done
echo "wrote $(ls "$here"/*.jsonl | wc -l) fixtures to $here"
