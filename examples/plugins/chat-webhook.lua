-- chat-webhook.lua: alerts a chat group (WeCom, DingTalk or Feishu robot),
-- or any receiver of JSON, when something needs a person: failed or
-- unknown orders, budget stops, unverified renewals, paused providers,
-- rejected credentials, renewals waiting for approval.
--
-- rules.yaml:
--   plugins:
--     settings:
--       chat-webhook:
--         url: https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...
--         style: wecom            # wecom | dingtalk | feishu | json
--         quiet_for: 1h           # the same alert at most once per this
--         sign: receiver          # optional: sign with plugins.webhook_secrets.receiver
--     webhook_secrets:
--       receiver: ${env:VIPD_WEBHOOK_SECRET}
--
-- `style: json` posts the event itself, with `id` (the same as the
-- `vipd-event-id` header) for the receiver to de-duplicate on. With
-- `sign`, every post carries `vipd-signature: t=...,v1=...` (README
-- "Signed webhooks" shows how a receiver checks it). The url is read
-- from vipd.settings; vipd never logs its query string.

local settings = vipd.settings
local style = settings.style or "wecom"
local quiet_for = settings.quiet_for or "1h"

-- One id per event: the same alert sent again (a retry) has the same id.
local function event_id(ev)
  return string.format("%s:%s:%d", ev.event, ev.key or ev.account or "-", ev.at)
end

local function body(ev, text)
  if style == "json" then
    return { id = event_id(ev), event = ev.event, at = ev.at, account = ev.account,
             rule = ev.rule, key = ev.key, detail = ev.detail, text = text }
  end
  if style == "feishu" then
    return { msg_type = "text", content = { text = text } }
  end
  -- WeCom and DingTalk robots take the same text shape.
  return { msgtype = "text", text = { content = text } }
end

local function who(ev)
  local parts = {}
  if ev.account then parts[#parts + 1] = "account " .. ev.account end
  if ev.rule then parts[#parts + 1] = "rule " .. ev.rule end
  if ev.key then parts[#parts + 1] = "order " .. string.sub(ev.key, 1, 12) end
  return table.concat(parts, ", ")
end

local function alert(ev, title)
  if not settings.url then
    vipd.log.warn("chat-webhook: no url in plugins.settings.chat-webhook; alert not sent", { event = ev.event })
    return
  end
  -- One alert per event, account and order within quiet_for.
  local dedup = "sent:" .. ev.event .. ":" .. (ev.account or "-") .. ":" .. (ev.key or "-")
  if vipd.kv.get(dedup) then return end
  local text = string.format("[vipd] %s\n%s\n%s", title, who(ev), ev.detail)
  if ev.dry_run then text = text .. "\n(dry run: nothing was paid)" end
  local opts = { timeout = 5 }
  if settings.sign then
    opts.sign = settings.sign
    opts.id = event_id(ev)
  end
  local res = vipd.http.post(settings.url, body(ev, text), opts)
  if not res.ok then
    error(string.format("chat webhook answered HTTP %d", res.status))
  end
  vipd.kv.set(dedup, true, { ttl = quiet_for })
end

vipd.on("recharge_result", function(ev)
  if ev.class ~= "accepted" and ev.class ~= "pending" and ev.class ~= "debug" then
    alert(ev, "Renewal attempt failed (" .. tostring(ev.class) .. ")")
  end
end)
vipd.on("order_unknown", function(ev) alert(ev, "Order may or may not be paid: check it") end)
vipd.on("budget_exceeded", function(ev) alert(ev, "Renewal stopped by the budget") end)
vipd.on("renewal_unverified", function(ev) alert(ev, "Paid, but the membership did not move") end)
vipd.on("provider_paused", function(ev) alert(ev, "Recharge provider paused") end)
vipd.on("account_auth_failed", function(ev) alert(ev, "Account credentials rejected") end)
vipd.on("approval_required", function(ev) alert(ev, "A renewal waits for your approval") end)
vipd.on("approval_escalated", function(ev) alert(ev, "Still waiting for approval: the end is near") end)
vipd.on("renewal_unapproved", function(ev) alert(ev, "Not approved in time: the membership ended") end)
