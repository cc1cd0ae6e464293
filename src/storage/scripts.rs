//! Lua scripts, so that a check and its write happen atomically in one round trip.
//! They hold no policy beyond what atomicity needs; decisions are made in Rust.

/// KEYS: templates, state, replay, inflight.
/// ARGV: now_ms, envelope digest, replay expiry ms, in-flight slot expiry ms,
/// in-flight token.
/// Marks the envelope as seen, claims the subject's single in-flight slot with
/// this call's token, and returns {"ok", state fields, templates} — or
/// {"replayed"} / {"busy"}.
/// A subject without templates gets nothing written: probing unknown or erased
/// subjects must not leave keys behind.
pub const VERIFY_BEGIN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'ok', redis.call('HGETALL', KEYS[2]), {}}
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2]) == 0 then
  return {'replayed'}
end
redis.call('PEXPIREAT', KEYS[3], ARGV[3])
if not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PXAT', ARGV[4]) then
  return {'busy'}
end
return {'ok', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[1])}
"#;

/// KEYS: templates, state, replay.
/// ARGV: now_ms, envelope digest, replay expiry ms, replace (0|1), max templates,
/// disable_after, template id, sealed template.
/// Returns {"ok", templates held} or {"replayed"} / {"cancelled"} / {"disabled"} / {"full"}.
pub const ENROLL: &str = r#"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2]) == 0 then
  return {'replayed'}
end
redis.call('PEXPIREAT', KEYS[3], ARGV[3])
if redis.call('HEXISTS', KEYS[2], 'cancelled') == 1 then
  return {'cancelled'}
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], 'fails', 'last_failure_ms')
else
  local fails = tonumber(redis.call('HGET', KEYS[2], 'fails') or '0')
  if fails >= tonumber(ARGV[6]) then
    return {'disabled'}
  end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
    return {'full'}
  end
end
redis.call('HSET', KEYS[1], ARGV[7], ARGV[8])
return {'ok', redis.call('HLEN', KEYS[1])}
"#;

/// KEYS: state, inflight. ARGV: outcome ("matched" | "failed" | "none"), now_ms,
/// in-flight token.
/// Updates the lockout counter and releases the in-flight slot, but only the
/// slot this call holds: a call slower than its slot's expiry must not free the
/// slot of the call that took it over.
pub const VERIFY_FINISH: &str = r#"
if ARGV[1] == 'matched' then
  redis.call('HDEL', KEYS[1], 'fails', 'last_failure_ms')
elseif ARGV[1] == 'failed' then
  redis.call('HINCRBY', KEYS[1], 'fails', 1)
  redis.call('HSET', KEYS[1], 'last_failure_ms', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"#;

/// KEYS: templates, state, inflight. ARGV: tombstone ticket id ("" for none),
/// tombstone expiry ms.
/// Erases the subject's templates, counters and in-flight slot and returns the
/// ids of the templates it held. A cancelled account keeps one field, its
/// `cancelled` ticket id, until the ticket expires, so the enroll script itself
/// refuses it; any other erasure of a cancelled account keeps the mark as it
/// was. The replay digests stay until their own expiry: they are digests of
/// ciphertext, and an envelope sealed before the erasure must not be accepted
/// after a re-enrollment.
pub const ERASE: &str = r#"
local held = redis.call('HKEYS', KEYS[1])
local mark = redis.call('HGET', KEYS[2], 'cancelled')
local mark_expiry = redis.call('PEXPIRETIME', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[2], 'cancelled', ARGV[1])
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
elseif mark then
  redis.call('HSET', KEYS[2], 'cancelled', mark)
  if mark_expiry > 0 then
    redis.call('PEXPIREAT', KEYS[2], mark_expiry)
  end
end
return held
"#;

/// KEYS: templates, state. ARGV: ticket id.
/// Marks the subject cancelled (unusable at once) unless it already is; returns
/// {ticket id in force, templates held}.
pub const CANCEL: &str = r#"
redis.call('HSETNX', KEYS[2], 'cancelled', ARGV[1])
return {redis.call('HGET', KEYS[2], 'cancelled'), redis.call('HLEN', KEYS[1])}
"#;

/// KEYS: templates. ARGV: triples of (template id, expected sealed bytes, new
/// sealed bytes or "" to delete). Applies all only if every template still holds
/// the expected bytes (compare-and-set against a concurrent enrollment); returns
/// the number held afterwards, or -1 on conflict.
pub const REWRITE: &str = r#"
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    return -1
  end
end
for i = 1, #ARGV, 3 do
  if ARGV[i + 2] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return redis.call('HLEN', KEYS[1])
"#;

/// KEYS: registry. ARGV: expected `gen` ("" = none yet), new gen, new doc.
/// Replaces the audit registry only if no other writer replaced it since it was
/// read. Returns 1 if replaced, 0 if not.
pub const REGISTRY_SWAP: &str = r#"
local current = redis.call('HGET', KEYS[1], 'gen') or ''
if current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'doc', ARGV[3])
return 1
"#;
