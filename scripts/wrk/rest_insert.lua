-- wrk script: POST one new row per request, the way the supabase client sends an insert.
-- Each wrk thread numbers its rows separately so ids never collide; ROW_PREFIX (default "w")
-- keeps two runs against the same collection apart.
local prefix = os.getenv("ROW_PREFIX") or "w"
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function request()
  counter = counter + 1
  local body = string.format('{"id":"%s%d-%d","name":"bench row %d","qty":%d}', prefix, tid, counter, counter, counter % 100)
  return wrk.format("POST", "/rest/v1/items", nil, body)
end
