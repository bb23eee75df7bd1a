-- daily-spend.lua: counts what renewals cost per day and posts a summary
-- to a chat webhook on a schedule (default every day at 09:00 in
-- daemon.timezone).
--
-- rules.yaml:
--   plugins:
--     settings:
--       daily-spend:
--         url: https://oapi.dingtalk.com/robot/send?access_token=...
--         schedule: "0 9 * * *"     # cron (5 or 6 fields) or an interval like "12h"

local settings = vipd.settings

-- Days in the operator's zone: settings.utc_offset_hours (default 8, Asia/Shanghai).
local offset = (settings.utc_offset_hours or 8) * 3600
local function day(t) return os.date("!%Y-%m-%d", t + offset) end

vipd.on("order_settled", function(ev)
  if ev.state ~= "succeeded" then return end
  local d = day(ev.at)
  -- kv.incr is atomic; money is kept in fen (integers).
  vipd.kv.incr("fen:" .. d, math.floor((ev.price or 0) * 100 + 0.5), { ttl = "40d" })
  vipd.kv.incr("orders:" .. d, 1, { ttl = "40d" })
end)

vipd.every(settings.schedule or "0 9 * * *", function()
  local lines = {}
  for _, back in ipairs({ -86400, 0 }) do
    local d = day(vipd.now() + back)
    local fen = vipd.kv.get("fen:" .. d) or 0
    local n = vipd.kv.get("orders:" .. d) or 0
    lines[#lines + 1] = string.format("%s: %d renewals, %.2f yuan", d, n, fen / 100)
  end
  local text = "[vipd] spend\n" .. table.concat(lines, "\n")
  vipd.log.info(text)
  if settings.url then
    local res = vipd.http.post(settings.url, { msgtype = "text", text = { content = text } })
    if not res.ok then error("summary webhook answered HTTP " .. res.status) end
  end
end)
