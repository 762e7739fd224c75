#!/usr/bin/env bash
# Rolls a release over several hosts, one at a time:
#   copy the tarball, install it, reload the service, wait for /readyz;
# stops at the first host that fails and names it and the step.
#
#   deploy/deploy.sh RELEASE_TARBALL host1 host2 ...
# Environment: DRY_RUN=1 prints every command instead of running it;
# SSH / SCP (default ssh / scp), REMOTE_SUDO (default sudo), GATEWAY_PORT
# (default 9001), READY_TIMEOUT_S (default 60), RELOAD (default
# reload-or-restart; "restart" also replaces the primary).
set -euo pipefail

release=${1:?usage: deploy.sh RELEASE_TARBALL HOST...}
shift
[ $# -gt 0 ] || { echo "deploy: no hosts (make deploy HOSTS=\"a b c\")" >&2; exit 2; }
[ -n "${DRY_RUN:-}" ] || [ -f "$release" ] || { echo "deploy: $release not found (make release)" >&2; exit 2; }

SSH=${SSH:-ssh}
SCP=${SCP:-scp}
SUDO=${REMOTE_SUDO-sudo}
PORT=${GATEWAY_PORT:-9001}
WAIT=${READY_TIMEOUT_S:-60}
RELOAD=${RELOAD:-reload-or-restart}
name=$(basename "$release" .tar.gz)

run() {
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%s\n' "$*"
  else
    "$@"
  fi
}

for host in "$@"; do
  echo "deploy: $host" >&2
  step=copy
  if run $SCP "$release" "$host:/tmp/$name.tar.gz" &&
     step=install && run $SSH "$host" "rm -rf /tmp/$name && tar -C /tmp -xzf /tmp/$name.tar.gz && $SUDO make -C /tmp/$name install" &&
     step=reload && run $SSH "$host" "$SUDO systemctl $RELOAD channel-gateway" &&
     step=readyz && run $SSH "$host" "for i in \$(seq $WAIT); do curl -fsS -o /dev/null http://127.0.0.1:$PORT/readyz && exit 0; sleep 1; done; exit 1"
  then
    echo "deploy: $host ready" >&2
  else
    echo "deploy: FAILED on $host at step '$step'; hosts after it were not touched" >&2
    exit 1
  fi
done
echo "deploy: all hosts done" >&2
