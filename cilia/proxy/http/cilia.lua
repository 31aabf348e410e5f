-- cilia's HTTP/TLS policy decision inside HAProxy, loaded with lua-load-per-thread: every thread has
-- its own Lua state (no lock between threads) and its own copy of the rule table. "cilia load" parses
-- the document in the CLI's thread and publishes its path and version in proc-scope variables; any
-- other thread sees the newer version at its next request and loads the same file first, so no
-- request is decided by rules older than the last completed "cilia load".
--
-- HAProxy decides most HTTP requests natively (the decision map, cilia.proxy.http.config); this
-- action decides the rest and the TLS ClientHellos. HAProxy parses HTTP and TLS and matches the
-- regexes (PCRE2, translated from RE2 by cilia.proxy.http.regex); this script only walks the rule
-- table: a request is allowed when any rule whose remotes contain the source identity matches it
-- (cilia.policy.l7, Cilium's semantics). The agent writes a rules document (cilia.proxy.http.rules)
-- and loads it through the runtime API with "cilia load <file>": the next request of every open
-- connection sees the new rules.
-- Anything unexpected leaves the verdict at "deny" (or "lua"): fail closed.

local state = { version = 0, policies = {}, ranges = {}, both_at_egress = false }
local parse

local function unescape(field)
  if field == "-" then return nil end
  return (field:sub(2):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function split(line)
  local out = {}
  for w in line:gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- HAProxy's Regex.new(re, cs) takes "case sensitive" as its second argument
local function regex(field, icase)
  local src = unescape(field)
  if src == nil then return nil end
  local ok, re = Regex.new(src, not icase)
  if not ok then error("bad regex " .. src) end
  return re
end

-- Parse a rules document into a fresh table (errors leave the old table in force).
parse = function(text)
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local head = split(lines[1] or "")
  if head[1] ~= "cilia-http-rules" then error("not a cilia rules document") end
  local new = { version = tonumber(head[2]) or 0, policies = {}, ranges = {}, both_at_egress = false }
  local pol, rule, http
  for i = 2, #lines do
    local f = split(lines[i])
    local k = f[1]
    if k == "O" and f[2] == "both_at_egress" then
      new.both_at_egress = f[3] == "1"
    elseif k == "P" then
      pol = { rules = {}, name = f[2] .. "|" .. f[3] .. "|" .. f[4] }
      local last = tonumber(f[5]) or 0
      if last > tonumber(f[4]) then
        pol.first, pol.last = tonumber(f[4]), last
        local key = f[2] .. "|" .. f[3]
        new.ranges[key] = new.ranges[key] or {}
        table.insert(new.ranges[key], pol)
      else
        new.policies[pol.name] = pol
      end
    elseif k == "R" then
      rule = { index = #pol.rules, kind = f[3], http = {}, sni = {} }
      if f[2] ~= "*" then
        rule.remotes = {}
        for id in f[2]:gmatch("[^,]+") do rule.remotes[tonumber(id)] = true end
      end
      pol.rules[#pol.rules + 1] = rule
    elseif k == "H" then
      http = { method = regex(f[2], false), path = regex(f[3], false), host = regex(f[4], false), headers = {},
               side_effects = false }
      rule.http[#rule.http + 1] = http
    elseif k == "M" then
      http.headers[#http.headers + 1] = { name = unescape(f[2]):lower(), value = unescape(f[3]), mismatch = f[4] }
      if f[4] ~= "-" and f[4] ~= "!" then http.side_effects = true end
    elseif k == "S" then
      rule.sni[#rule.sni + 1] = regex(f[2], true)
    end
  end
  return new
end

local function load_file(path)
  local f = path and io.open(path, "r")
  if not f then return nil, "cannot open " .. tostring(path) end
  local text = f:read("a")
  f:close()
  local ok, new = pcall(parse, text)
  if not ok then return nil, tostring(new) end
  return new
end

core.register_cli({ "cilia", "load" }, "cilia load <file> : load a cilia HTTP/TLS rules document",
  function(applet, _, _, path)
    local new, err = load_file(path)
    if not new then applet:send("ERROR " .. err .. "\n") return end
    state = new
    applet:set_var("proc.cilia_rules_path", path)
    applet:set_var("proc.cilia_rules_version", new.version)
    applet:send("OK " .. tostring(new.version) .. "\n")
  end)

-- This thread's rule table up to the last "cilia load" (a thread that cannot read it denies all).
local function sync(txn)
  local v = txn:get_var("proc.cilia_rules_version")
  if v == nil or v <= state.version then return end
  local new, err = load_file(txn:get_var("proc.cilia_rules_path"))
  if new then
    state = new
  else
    core.Alert("cilia: rules not loaded: " .. err)
    state = { version = v, policies = {}, ranges = {}, both_at_egress = false }
  end
end

core.register_cli({ "cilia", "version" }, "cilia version : the loaded rules document's version",
  function(applet) applet:send(tostring(state.version) .. "\n") end)

-- One header match (cilia.policy.l7.HTTPRule.check): the value must equal (an empty or absent
-- value: the header must be present). On a mismatch, an action (LOG, ADD, DELETE, REPLACE) lets the
-- rule go on and is noted; "-" (no action) fails the rule, "!" (a Secret that does not exist) never
-- matches. Actions are computed against the request as received.
local function header_ok(m, headers, actions)
  if m.mismatch == "!" then return false end
  local have = headers[m.name]
  local presence = m.value == nil or m.value == ""
  local matched
  if presence then matched = have ~= nil else matched = have == m.value end
  if matched then return true end
  if m.mismatch == "-" then return false end
  if m.mismatch == "DELETE" then
    if not presence and have ~= nil then actions[#actions + 1] = m end
  else
    actions[#actions + 1] = m
  end
  return true
end

local function http_ok(h, req, actions)
  if h.method and not h.method:match(req.method) then return false end
  if h.path and not h.path:match(req.path) then return false end
  if h.host and not h.host:match(req.host) then return false end
  local mine = {}
  for _, m in ipairs(h.headers) do
    if not header_ok(m, req.headers, mine) then return false end
  end
  for _, a in ipairs(mine) do actions[#actions + 1] = a end
  return true
end

-- cilia.policy.l7.L7PortPolicy.decide_http: allowed when any rule for the remote matches; every
-- rule is evaluated, and within a rule the HTTP rules after the first match only when header
-- actions may follow (has_side_effects), so that every action Cilium would take is taken.
local function decide_http(pol, remote, req)
  local actions = {}
  local allowed = false
  for _, r in ipairs(pol.rules) do
    if r.remotes == nil or r.remotes[remote] then
      if r.kind == "any" then
        allowed = true
      else
        for _, h in ipairs(r.http) do
          if http_ok(h, req, actions) then
            allowed = true
            if not h.side_effects then break end
          end
        end
      end
    end
  end
  return allowed, actions
end

local function apply(txn, actions)
  for _, m in ipairs(actions) do
    if m.mismatch == "ADD" then
      txn.http:req_add_header(m.name, m.value)
    elseif m.mismatch == "DELETE" then
      txn.http:req_del_header(m.name)
    elseif m.mismatch == "REPLACE" then
      txn.http:req_set_header(m.name, m.value)
    end
  end
end

-- The policy of (direction, endpoint address, port): a single port, else a port range covering it.
local function policy_for(direction, ip, port)
  local pol = state.policies[direction .. "|" .. tostring(ip) .. "|" .. tostring(port)]
  if pol then return pol end
  local p = tonumber(port)
  for _, r in ipairs(state.ranges[direction .. "|" .. tostring(ip)] or {}) do
    if p and r.first <= p and p <= r.last then return r end
  end
  return nil
end

-- The HTTP listeners' action, for the requests the native decision leaves to Lua (verdict "lua":
-- header matches, port ranges, odd characters): txn.cilia_v becomes "allow" only when every policy
-- that applies allows. The request's path, host and headers are logged natively.
core.register_action("cilia_http", { "http-req" }, function(txn)
  txn:set_var("txn.cilia_v", "deny")
  sync(txn)
  local direction = txn:get_var("txn.cilia_dir")
  local src, dst = txn:get_var("txn.cilia_src"), txn:get_var("txn.cilia_dst")
  local dport = txn:get_var("txn.cilia_dport")
  local sid, did = txn:get_var("txn.cilia_sid"), txn:get_var("txn.cilia_did")
  local raw = txn.http:req_get_headers()
  local headers = {}
  for name, values in pairs(raw) do
    local all = {}
    for i = 0, #values do all[#all + 1] = values[i] end
    headers[name] = table.concat(all, ",")
  end
  local req = { method = txn.sf:method(), path = txn.sf:pathq() or "", host = headers["host"] or "",
                headers = headers }
  local checks = {}
  if direction == "egress" then
    checks[1] = { "egress", src, tonumber(did) }
    if state.both_at_egress and policy_for("ingress", dst, dport) then checks[2] = { "ingress", dst, tonumber(sid) } end
  else
    checks[1] = { "ingress", dst, tonumber(sid) }
  end
  local decided, all_actions = {}, {}
  for _, c in ipairs(checks) do
    local pol = policy_for(c[1], c[2], dport)
    local ok, actions = false, {}
    if pol then ok, actions = decide_http(pol, c[3], req) end
    decided[#decided + 1] = c[1] .. (ok and "+" or "-")
    for _, a in ipairs(actions) do all_actions[#all_actions + 1] = a end
    if not ok then
      txn:set_var("txn.cilia_eval", table.concat(decided, ","))
      return
    end
  end
  txn:set_var("txn.cilia_eval", table.concat(decided, ","))
  apply(txn, all_actions)
  txn:set_var("txn.cilia_v", "allow")
end, 0)

-- The TLS listeners' action (after the ClientHello): the SNI against the policy's server names.
core.register_action("cilia_sni", { "tcp-req" }, function(txn)
  sync(txn)
  local direction = txn:get_var("sess.cilia_dir")
  local src, dst = txn:get_var("sess.cilia_src"), txn:get_var("sess.cilia_dst")
  local dport = txn:get_var("sess.cilia_dport")
  local sid, did = txn:get_var("sess.cilia_sid"), txn:get_var("sess.cilia_did")
  local sni = txn.f:req_ssl_sni() or ""
  local checks
  if direction == "egress" then
    checks = { { "egress", src, tonumber(did) } }
    if state.both_at_egress and policy_for("ingress", dst, dport) then checks[2] = { "ingress", dst, tonumber(sid) } end
  else
    checks = { { "ingress", dst, tonumber(sid) } }
  end
  local decided = {}
  for _, c in ipairs(checks) do
    local pol = policy_for(c[1], c[2], dport)
    local ok = false
    for _, r in ipairs(pol and pol.rules or {}) do
      if r.remotes == nil or r.remotes[c[3]] then
        if r.kind == "any" or #r.sni == 0 then ok = true break end
        for _, re in ipairs(r.sni) do
          if re:match(sni) then ok = true break end
        end
        if ok then break end
      end
    end
    decided[#decided + 1] = c[1] .. (ok and "+" or "-")
    txn:set_var("sess.cilia_eval", table.concat(decided, ","))  -- logged: the flows' policies
    if not ok then return end
  end
  txn:set_var("sess.cilia_v", "allow")
end, 0)

-- The rules in force when HAProxy (re)starts: the agent's last document, so a restarted proxy
-- enforces at once (before the agent has noticed the restart).
core.register_init(function()
  local path = os.getenv("CILIA_HTTP_RULES")
  local f = path and io.open(path, "r")
  if not f then return end
  local text = f:read("a")
  f:close()
  local ok, new = pcall(parse, text)
  if ok then state = new else core.Alert("cilia: rules not loaded: " .. tostring(new)) end
end)
