-- vendor-callback.lua: maps callbacks from a vendor whose field names
-- differ from the built-in mapping (this one sends out_trade_no,
-- trade_state SUCCESS/FAIL and amount in fen). vipd has already checked
-- the signature (the provider's `callback.sign_field`) before asking.
--
-- rules.yaml:
--   providers:
--     other:
--       kind: recharge
--       callback: { sign_field: sign, reply: "OK" }

vipd.on("parse_callback", function(ev)
  local f = ev.fields
  if not f.out_trade_no or not f.trade_state then return nil end
  local status
  if f.trade_state == "SUCCESS" then status = "success"
  elseif f.trade_state == "FAIL" or f.trade_state == "CLOSED" then status = "failed"
  else return nil end  -- still processing: leave the order as it is
  return {
    order = f.out_trade_no,
    status = status,
    price = f.amount and tonumber(f.amount) / 100 or nil,
  }
end)
