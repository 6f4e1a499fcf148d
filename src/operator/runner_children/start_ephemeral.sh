# Starts just-in-time runners, one job each: asks the API server for a configuration minted for
# this pod (proving who it is with the pod's own token, audience github-action-autoscaler), runs
# the runner with it until its one job ends, and asks again. The pod holds no GitHub credential;
# a request while this pod's runner runs a job is refused (409), so job code cannot register a
# runner of its own. Nothing starts once the drain has begun (/tmp/gaa-draining).
home="${RUNNER_HOME:-/home/runner}"
draining="${GAA_DRAINING_FILE:-/tmp/gaa-draining}"
token_file="${GAA_JIT_TOKEN_FILE:-/var/run/secrets/github-action-autoscaler/token}"
answer="$(mktemp)"
while [ ! -e "$draining" ]; do
  status="$(curl -sS -o "$answer" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $(cat "$token_file")" "$GAA_JIT_URL" || echo 000)"
  case "$status" in
    200)
      config="$(sed -n 's/.*"encodedJitConfig":"\([^"]*\)".*/\1/p' "$answer")"
      rm -f "$answer"
      [ -n "$config" ] || { echo "gaa: no configuration in the API server's answer" >&2; sleep 5; answer="$(mktemp)"; continue; }
      [ ! -e "$draining" ] || break
      "$home/run.sh" --jitconfig "$config" || sleep 1
      answer="$(mktemp)"
      ;;
    *)
      echo "gaa: the API server answered $status: $(cat "$answer" 2>/dev/null)" >&2
      sleep "${GAA_JIT_RETRY_SECONDS:-5}"
      ;;
  esac
done
rm -f "$answer"
