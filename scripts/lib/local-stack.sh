# Sourced by scripts/run-local.sh and tests/smoke_cargo_lambda.sh: a local S3
# (moto) and the function under `cargo lambda watch`, both on 127.0.0.1.
# Logs go to target/local/ (never into watched source directories).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$ROOT/.venv/bin:$PATH"
STATE="$ROOT/target/local"
BUCKET=${BUCKET:-cdc-lake-local}
mkdir -p "$STATE"
PIDS=()

free_port() {
  python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$3 did not listen on port $1 within $2 s (logs in $STATE)" >&2
  return 1
}

start_moto() {
  MOTO_PORT=$(free_port)
  setsid moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
  PIDS+=($!)
  wait_port "$MOTO_PORT" 60 moto_server
  S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
  python - "$S3_ENDPOINT" "$BUCKET" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
             aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket=sys.argv[2])
PY
}

# The function under the local Lambda emulator, writing to the moto bucket.
# With FUNCTION_BINARY set (the test suite: the binary `cargo test` built),
# cargo lambda emulates only the Lambda APIs and that binary is started here:
# `cargo lambda watch` would build the function again, and without the test
# build's dev-dependencies it would build every dependency a second time.
start_function() {
  LAMBDA_PORT=$(free_port)
  # setsid: the watcher and the function it starts form one process group,
  # stopped together on exit.
  cd "$ROOT"
  # The sample window events' states record the window's rules, among them the memory
  # budget of a function without AWS_LAMBDA_FUNCTION_MEMORY_SIZE (1,024 MB: a third of it);
  # cargo lambda's emulator says 4,096 MB, so the budget is set to match the samples.
  local env=(S3_BUCKET_NAME="$BUCKET" AWS_ENDPOINT_URL_S3="$S3_ENDPOINT" S3_FORCE_PATH_STYLE=true
    AWS_ENDPOINT_URL_KINESIS="$S3_ENDPOINT" HEARTBEAT_STREAMS="${HEARTBEAT_STREAMS:-}"
    FLUSH_MODE="${FLUSH_MODE:-}" MAX_BUFFERED_BYTES="${MAX_BUFFERED_BYTES:-357913941}"
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1)
  if [ -n "${FUNCTION_BINARY:-}" ]; then
    setsid cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$LAMBDA_PORT" \
      >>"$STATE/function.log" 2>&1 &
    FUNCTION_PGID=$!
    PIDS+=($!)
    wait_port "$LAMBDA_PORT" 120 "cargo lambda watch --only-lambda-apis"
    # What the emulator tells a function started by hand to set.
    setsid env "${env[@]}" AWS_LAMBDA_FUNCTION_NAME=_ AWS_LAMBDA_FUNCTION_VERSION=1 \
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE=4096 AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$LAMBDA_PORT/.rt" \
      "$FUNCTION_BINARY" >>"$STATE/function.log" 2>&1 &
    BINARY_PGID=$!
    PIDS+=($!)
    disown "$BINARY_PGID" # a kill -9 of it is the smoke test's own doing: no job notice
  else
    setsid env "${env[@]}" cargo lambda watch -A 127.0.0.1 -P "$LAMBDA_PORT" \
      >>"$STATE/function.log" 2>&1 &
    FUNCTION_PGID=$!
    PIDS+=($!)
    wait_port "$LAMBDA_PORT" 900 "cargo lambda watch"
  fi
}

# The function process itself (not the watcher), as cargo lambda runs it.
function_pid() {
  pgrep -f "$ROOT/target/debug/cdc-batcher$" || pgrep -f "target/debug/cdc-batcher$"
}

# A Kinesis stream on the moto server (same port) for the heartbeats.
create_stream() { # name shards
  python - "$S3_ENDPOINT" "$1" "$2" <<'PY'
import sys, boto3
k = boto3.client("kinesis", endpoint_url=sys.argv[1], aws_access_key_id="test",
                 aws_secret_access_key="test", region_name="us-east-1")
k.create_stream(StreamName=sys.argv[2], ShardCount=int(sys.argv[3]))
print(k.describe_stream_summary(StreamName=sys.argv[2])["StreamDescriptionSummary"]["StreamARN"])
PY
}

invoke() { # event-file
  timeout 600 cargo lambda invoke -A 127.0.0.1 -P "$LAMBDA_PORT" --data-file "$1"
}

# Stops the emulator and the function (moto keeps running).
stop_function() {
  kill -- "-$FUNCTION_PGID" 2>/dev/null || true
  [ -z "${BINARY_PGID:-}" ] || kill -- "-$BINARY_PGID" 2>/dev/null || true
  pkill -f "$ROOT/target/debug/cdc-batcher" 2>/dev/null || true
  local i
  for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$LAMBDA_PORT") 2>/dev/null || return 0; sleep 0.1; done
}

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  done
  pkill -f "$ROOT/target/debug/cdc-batcher" 2>/dev/null || true
}
trap stop_all EXIT
