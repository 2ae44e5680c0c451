-- wrk script: GET one row by key per request, a key drawn at random among the 10,000 rows
-- run-rest.sh loads (k0-k9999), as PostgreSQL's side draws `random(1, 10000)` in pgbench. One
-- fixed key would let anything keyed by the request (a cache of parsed queries, a hot row in
-- the CPU's caches) look better than a client reading varying keys would see it.
-- The bare Hummingbird route answers any path under /rest/v1/ with the same bytes, so it pays
-- the same script cost in wrk.
function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed)
end

function request()
  return wrk.format("GET", "/rest/v1/items?select=*&id=eq.k" .. math.random(0, 9999))
end
