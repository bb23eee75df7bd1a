-- activity.lua: the default plugin. Says in one log line what each renewal
-- did, counts today's renewals in vipd.kv (they survive restarts), and logs
-- a summary every 10 minutes. See examples/plugins/ for chat alerts,
-- skip lists, spend summaries and callback mappings.

local function today() return os.date("!%Y-%m-%d", vipd.now() + 8 * 3600) end

vipd.on("recharge_result", function(ev)
  vipd.log.info(string.format("%s: attempt %d under %s: %s", ev.account, ev.attempt, ev.rule, ev.class),
    { order = ev.key, state = ev.state })
end)

vipd.on("order_settled", function(ev)
  if ev.state == "succeeded" then
    local n = vipd.kv.incr("renewed:" .. today(), 1, { ttl = "7d" })
    vipd.log.info(string.format("%s renewed (%d today)", ev.account, n), { price = ev.price })
  end
end)

vipd.on("renewal_verified", function(ev)
  local ends = os.date("!%Y-%m-%d %H:%M UTC", ev.new_end)
  vipd.log.info(string.format("%s: %s now ends %s", ev.account, ev.membership, ends))
end)

vipd.every("10m", function()
  vipd.log.info(string.format("%d renewals today", vipd.kv.get("renewed:" .. today()) or 0))
end)
