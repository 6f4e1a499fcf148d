# The runner container's preStop hook: returns once the runner can be stopped without losing a
# job, and leaves no runner that could still take one.
#
# Looking for a running job and then returning races with the listener: it can take a job right
# after the look, and the stop signal that follows would cancel it. So every look is made with
# the listener frozen (SIGSTOP): a frozen listener takes no job. While frozen, it is killed when
# no job runs and it received no message for $GAA_DRAIN_QUIET_SECONDS: GitHub's listener records
# each message it receives in $RUNNER_PERFLOG/Runner.perf before it acquires the job, so a quiet
# record means nothing is being acquired, and a job GitHub offered it meanwhile goes to another
# runner. Otherwise it is thawed, and looked at again two seconds later.
quiet="${GAA_DRAIN_QUIET_SECONDS:-180}"
record="${RUNNER_PERFLOG:-/nonexistent}/Runner.perf"
# The container's start command starts no runner once this exists.
: >/tmp/gaa-draining
# PIDs of the processes whose command line matches $1 (a bracket keeps the pattern from matching
# the shell that runs this script).
running() { grep -ls "$1" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3; }
while :; do
  listener=$(running 'Runner\.Listene[r]')
  if [ -z "$listener" ]; then
    # No listener: wait while a job still runs or the runner is still starting.
    [ -n "$(running 'Runner\.Worke[r]')$(running 'run-helpe[r]')" ] || exit 0
    sleep 2
    continue
  fi
  # shellcheck disable=SC2086 # one PID per word
  kill -STOP $listener 2>/dev/null || continue
  quiet_for=$quiet
  [ -f "$record" ] && quiet_for=$(($(date +%s) - $(stat -c %Y "$record")))
  if [ -z "$(running 'Runner\.Worke[r]')" ] && [ "$quiet_for" -ge "$quiet" ]; then
    # shellcheck disable=SC2086
    kill -KILL $listener
    exit 0
  fi
  # shellcheck disable=SC2086
  kill -CONT $listener
  sleep 2
done
