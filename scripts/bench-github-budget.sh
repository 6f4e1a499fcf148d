#!/usr/bin/env bash
# GitHub budget of the resync: simulated hours against the fake GitHub (real HTTP on loopback),
# 1,000 and 10,000 repositories, 5% active in the measured hour, 99% of webhooks delivered, one
# token of 5,000 credits an hour. Prints credits and requests per hour, the cold start, and how
# long the worst lost webhook left demand wrong. Then the same hour with a webhook outage (every
# delivery lost for 10 minutes from 15 minutes in): how long after it ended its last loss was
# repaired, and the credits that cost. Last, 10,000 repositories read by a GitHub App over 10
# installations: credits per installation, the App's own requests, and the JWTs and installation
# tokens minted in the hour. Extra arguments go to every run (e.g. --seed 2).
set -euo pipefail
cd "$(dirname "$0")/.."
for repos in 1000 10000; do
  echo "== $repos repositories"
  cargo bench --quiet --bench github_budget -- --repos "$repos" --active 5 --webhooks 99 "$@"
  echo "== $repos repositories, webhook outage of 10 minutes"
  cargo bench --quiet --bench github_budget -- --repos "$repos" --active 5 --webhooks 99 \
    --outage-at 900 --outage-minutes 10 "$@"
done
echo "== 10000 repositories, GitHub App over 10 installations"
cargo bench --quiet --bench github_budget -- --repos 10000 --active 5 --webhooks 99 --app-installations 10 "$@"
