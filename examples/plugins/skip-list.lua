-- skip-list.lua: vetoes renewals for listed accounts or tags, and for
-- accounts put on hold at run time (vipd.kv "hold:<account>", e.g. set by
-- another plugin). The veto and its reason are recorded in the ledger and
-- shown by `vipd status`.
--
-- rules.yaml:
--   plugins:
--     settings:
--       skip-list:
--         accounts: { carol: "left the company on 2026-11-01" }
--         tags: [frozen]

local settings = vipd.settings
local accounts = settings.accounts or {}
local tags = {}
for _, t in ipairs(settings.tags or {}) do tags[t] = true end

local tags_of = {}
for _, a in ipairs(vipd.config.accounts) do tags_of[a.name] = a.tags end

vipd.on("before_recharge", function(ev)
  local why = accounts[ev.account]
  if why then
    return { skip = "on the skip list: " .. tostring(why) }
  end
  for _, t in ipairs(tags_of[ev.account] or {}) do
    if tags[t] then return { skip = "tag " .. t .. " is on the skip list" } end
  end
  local hold = vipd.kv.get("hold:" .. ev.account)
  if hold then return { skip = "on hold: " .. tostring(hold) } end
end)
