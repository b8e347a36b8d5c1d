-- The edge filter's HTTPS-listener work written as an Envoy Lua filter: the alternative an
-- Envoy user would reach for first. It exists only so `make bench` can compare the two on the
-- same Envoy (deploy/envoy/render.sh with EDGE_FILTER=lua prepends the CONFIG table); it is
-- not shipped.
--
-- Same decisions as edge-filter's `classify` on the TLS listener, so both do the same work:
--   * on WebSocket paths, the RFC 6455 §4.2.1 handshake checks (method, Upgrade, Connection,
--     a Sec-WebSocket-Key of 16 bytes, version 13 → 400 / 426) and the Origin allow-list (403);
--   * sticky routing: drop client copies of the affinity header, then take the key from the
--     sources in order — query parameter, header, the signed cookie (HMAC-SHA256, verified),
--     a newly minted key for browsers (HMAC of a per-request nonce, signed, Set-Cookie on the
--     response), or the client address — and set the header Envoy's hash_policy reads.
-- Not ported: counters, HTTP/2 extended CONNECT, leaving the header unset for a request whose
-- one valid cookie the route hashes itself (render.sh gives the Lua routes no cookie hash, so
-- this always sets the header, with the same value), and the constant-time MAC comparison (Lua
-- strings are interned; equality is a pointer compare, so timing says nothing useful here).
--
-- Lua has no HMAC, so SHA-256 is written below with LuaJIT's `bit` library, with the HMAC key
-- blocks hashed once at load (as the Rust `hmac` crate keeps its inner/outer state).

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit = bit.rshift, bit.lshift, bit.ror, bit.tobit
local byte, char, sub, find, rep = string.byte, string.char, string.sub, string.find, string.rep
local floor, concat = math.floor, table.concat

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end
local H0 = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
for i = 1, 8 do H0[i] = tobit(H0[i]) end

local W = {}

-- One 64-byte block at offset `i` of `s` into state `h` (8 words, updated in place).
local function block(h, s, i)
  for j = 0, 15 do
    local a, b, c, d = byte(s, i + 4 * j, i + 4 * j + 3)
    W[j] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  for j = 16, 63 do
    local w15, w2 = W[j - 15], W[j - 2]
    local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
    local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
    W[j] = tobit(W[j - 16] + s0 + W[j - 7] + s1)
  end
  local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
  for j = 0, 63 do
    local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = hh + S1 + ch + K[j + 1] + W[j]
    local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    hh, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + S0 + maj)
  end
  h[1], h[2], h[3], h[4] = tobit(h[1] + a), tobit(h[2] + b), tobit(h[3] + c), tobit(h[4] + d)
  h[5], h[6], h[7], h[8] = tobit(h[5] + e), tobit(h[6] + f), tobit(h[7] + g), tobit(h[8] + hh)
end

-- SHA-256 of `msg`, continuing from state `init` after `done` bytes (0 or 64 here).
local function sha256_from(init, done, msg)
  local h = { init[1], init[2], init[3], init[4], init[5], init[6], init[7], init[8] }
  local bits = (done + #msg) * 8
  msg = msg .. "\128" .. rep("\0", (55 - #msg) % 64)
    .. char(0, 0, 0, 0, band(rshift(bits, 24), 255), band(rshift(bits, 16), 255),
            band(rshift(bits, 8), 255), band(bits, 255))
  for i = 1, #msg, 64 do block(h, msg, i) end
  local out = {}
  for j = 1, 8 do
    local v = h[j]
    out[j] = char(band(rshift(v, 24), 255), band(rshift(v, 16), 255), band(rshift(v, 8), 255), band(v, 255))
  end
  return concat(out)
end

-- HMAC-SHA256 (RFC 2104) with the key blocks hashed once.
local function hmac_for(secret)
  if #secret > 64 then secret = sha256_from(H0, 0, secret) end
  secret = secret .. rep("\0", 64 - #secret)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(secret, i)
    ipad[i], opad[i] = char(bxor(k, 0x36)), char(bxor(k, 0x5c))
  end
  local inner = { H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8] }
  local outer = { H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8] }
  block(inner, concat(ipad), 1)
  block(outer, concat(opad), 1)
  return function(msg)
    return sha256_from(outer, 64, sha256_from(inner, 64, msg))
  end
end

local hmac = hmac_for(CONFIG.cookie_secret)
local COOKIE_LABEL = "acme-edge affinity cookie v1\0"
local NEW_KEY_LABEL = "acme-edge affinity new key v1\0"
local MAX_KEY_LEN = 128

local function b64url(handle, s)
  return (handle:base64Escape(s):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

-- "/ws" matches "/ws", "/ws/…" and "/ws?…", not "/wsx" (edge-filter's path_has_prefix).
local function has_prefix(path, prefix)
  if sub(path, 1, #prefix) ~= prefix then return false end
  if sub(prefix, -1) == "/" then return true end
  local nxt = sub(path, #prefix + 1, #prefix + 1)
  return nxt == "" or nxt == "/" or nxt == "?"
end

local function trim(s) return (s:gsub("^[ \t]+", ""):gsub("[ \t]+$", "")) end

-- Visible ASCII, 1..128 bytes: a client-chosen key becomes a header value.
local function plain_key(v)
  if v == nil or #v == 0 or #v > MAX_KEY_LEN or find(v, "[^\33-\126]") then return nil end
  return v
end

local function query_value(path, name)
  local q = path:match("%?(.*)$")
  if q == nil then return nil end
  for pair in q:gmatch("[^&]+") do
    local n, v = pair:match("^([^=]*)=?(.*)$")
    if n == name and v ~= "" then return v end
  end
  return nil
end

local function has_token(value, token)
  for t in value:gmatch("[^,]+") do
    if trim(t):lower() == token then return true end
  end
  return false
end

local function origin_allowed(origin)
  if #CONFIG.allowed_origins == 0 then return true end
  for _, pattern in ipairs(CONFIG.allowed_origins) do
    if pattern == "*" or pattern == origin then return true end
    local scheme, domain = pattern:match("^([^:]+)://%*%.(.+)$")
    if scheme and sub(origin, 1, #scheme + 3) == scheme .. "://"
        and sub(origin, -(#domain + 1)) == "." .. domain then
      return true
    end
  end
  return false
end

local function refuse(handle, status, text, extra)
  local headers = { [":status"] = status, ["content-type"] = "text/plain; charset=utf-8",
                    ["cache-control"] = "no-store" }
  if extra then for k, v in pairs(extra) do headers[k] = v end end
  handle:respond(headers, text)
end

-- RFC 6455 §4.2.1; returns false after answering when the handshake is refused.
local function check_handshake(handle, headers)
  if headers:get(":method") ~= "GET" then
    refuse(handle, "400", "websocket handshake must be GET\n") return false
  end
  local upgrade = headers:get("upgrade")
  if upgrade == nil or trim(upgrade):lower() ~= "websocket" then
    refuse(handle, "400", "websocket handshake needs Upgrade: websocket\n") return false
  end
  local connection = headers:get("connection")
  if connection == nil or not has_token(connection, "upgrade") then
    refuse(handle, "400", "websocket handshake needs Connection: Upgrade\n") return false
  end
  local key = headers:get("sec-websocket-key")
  if key == nil or not trim(key):match("^[A-Za-z0-9+/]+[AQgw]==$") or #trim(key) ~= 24 then
    refuse(handle, "400", "websocket handshake needs a valid Sec-WebSocket-Key\n") return false
  end
  local version = headers:get("sec-websocket-version")
  if version == nil or trim(version) ~= "13" then
    refuse(handle, "426", "websocket version 13 required\n", { ["sec-websocket-version"] = "13" })
    return false
  end
  local origin = headers:get("origin")
  if origin ~= nil and not origin_allowed(origin) then
    refuse(handle, "403", "origin not allowed\n") return false
  end
  return true
end

-- The cookie value itself if its MAC verifies: the whole value is the header's key, as the
-- edge filter's (the same backend for the same cookie with either filter).
local function verify(handle, value)
  local key, tag = value:match("^([A-Za-z0-9_-]+)%.([A-Za-z0-9_-]+)$")
  if key == nil or #key ~= 22 or #tag ~= 43 then return nil end
  if b64url(handle, hmac(COOKIE_LABEL .. key)) ~= tag then return nil end
  return value
end

local function cookie_key(handle, headers)
  local name = CONFIG.cookie_name
  for i = 0, headers:getNumValues("cookie") - 1 do
    for pair in headers:getAtIndex("cookie", i):gmatch("[^;]+") do
      local n, v = trim(pair):match("^([^=]+)=(.*)$")
      if n == name then
        local key = verify(handle, (v:gsub('^"(.*)"$', "%1")))
        if key then return key end
      end
    end
  end
  return nil
end

local minted = 0

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path") or "/"
  local path_only = path:match("^[^?]*")
  for _, prefix in ipairs(CONFIG.ws_paths) do
    if has_prefix(path_only, prefix) then
      if not check_handshake(handle, headers) then return end
      break
    end
  end

  headers:remove(CONFIG.affinity_header)
  local key
  for _, source in ipairs(CONFIG.sources) do
    if source.query then
      key = plain_key(query_value(path, source.query))
    elseif source.header then
      local v = headers:get(source.header)
      key = v and plain_key(trim(v))
    elseif source.cookie then
      key = cookie_key(handle, headers)
      if key == nil and headers:get("origin") ~= nil then
        -- A browser without our cookie: mint a key from a per-request nonce, sign it.
        minted = minted + 1
        local nonce = (headers:get("x-request-id") or "") .. os.clock() .. ":" .. minted
        local new = b64url(handle, sub(hmac(NEW_KEY_LABEL .. nonce), 1, 16))
        local value = new .. "." .. b64url(handle, hmac(COOKIE_LABEL .. new))
        key = value
        handle:streamInfo():dynamicMetadata():set("edge", "set_cookie",
          CONFIG.cookie_name .. "=" .. value .. "; Max-Age=" .. CONFIG.cookie_max_age
            .. "; Path=/; Secure; HttpOnly; SameSite=Lax")
      end
    elseif source.client_address then
      local address = handle:streamInfo():downstreamRemoteAddress()
      key = address and (address:match("^%[(.*)%]:%d+$") or address:match("^([^:]+):%d+$") or address)
    end
    if key then break end
  end
  if key then headers:add(CONFIG.affinity_header, key) end
end

function envoy_on_response(handle)
  local edge = handle:streamInfo():dynamicMetadata():get("edge")
  if edge and edge.set_cookie then
    handle:headers():add("set-cookie", edge.set_cookie)
  end
end
