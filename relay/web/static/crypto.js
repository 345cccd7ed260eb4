// All of the owners' web app's cryptography, in one module, on today's formats
// (docs/formats.md; protocol/crypto.py and protocol/decisions.py are the reference):
//
// * ring snapshots and clip keys: libsodium sealed boxes to the owner's X25519 key; a
//   clip's key exists only sealed to the owner (`owner_key`), and an approval carries
//   it re-sealed to the requester (crypto_box_seal_open, then crypto_box_seal);
// * clips: ChaCha20-Poly1305 (IETF) in the STREAM construction: a 15-byte header
//   "ODB1" | chunk size (u32 BE) | 7-byte nonce prefix, then chunks of chunk+16 bytes;
//   chunk i's nonce is prefix | i (u32 BE) | 1 if last else 0; the header is the AAD;
// * decisions: Ed25519 over the canonical JSON (keys sorted, no spaces, non-ASCII
//   escaped, as Python's json.dumps(sort_keys=True, separators=(",", ":"))), sent as
//   base64(JSON {"payload": base64(body), "signature": base64(sig)}).
//
// The keys come from the folder `footage keys new` writes (sign.key: the Ed25519 seed,
// box.key: the X25519 private key, base64).  They are kept in IndexedDB only wrapped
// with AES-256-GCM under a key derived from the owner's passphrase (PBKDF2-SHA-256,
// 600 000 rounds; WebCrypto, non-extractable); unwrapped keys live in memory only and
// are never sent anywhere.  Libsodium (npm libsodium-wrappers) and WebCrypto do all
// the maths; nothing here is home-made crypto.

import sodium from "./vendor/libsodium-wrappers.mjs";

const MAGIC = "ODB1";
const HEADER = 15;
const TAG = 16;
const PBKDF2_ROUNDS = 600000;
const DB = "open-doorbell";
const STORE = "keys";

export async function ready() {
  await sodium.ready;
}

export const b64 = (bytes) => sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
export const unb64 = (text) => sodium.from_base64(text.trim(), sodium.base64_variants.ORIGINAL);

// ------------------------------------------------------------------ the key folder

/** Keys from the folder's files: {sign.key, box.key} as text. */
export function keysFromFolder(files) {
  const sign = unb64(files["sign.key"] || "");
  const box = unb64(files["box.key"] || "");
  if (sign.length !== 32 || box.length !== 32) {
    throw new Error("sign.key and box.key must each hold a 32-byte key in base64");
  }
  return fromSecrets(sign, box);
}

function fromSecrets(signSeed, boxSecret) {
  const pair = sodium.crypto_sign_seed_keypair(signSeed);
  return {
    signSeed,
    signSecret: pair.privateKey,
    signPublic: pair.publicKey,
    boxSecret,
    boxPublic: sodium.crypto_scalarmult_base(boxSecret),
  };
}

async function passphraseKey(passphrase, salt) {
  const base = await crypto.subtle.importKey(
    "raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: PBKDF2_ROUNDS },
    base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function dbDo(mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => { db.close(); resolve(req.result); };
    tx.onerror = () => reject(tx.error);
  });
}

/** Wrap the keys under the passphrase and keep them in IndexedDB for `owner`. */
export async function storeKeys(owner, keys, passphrase) {
  if (!passphrase || passphrase.length < 8) throw new Error("use a passphrase of 8 characters or more");
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const secret = new Uint8Array(64);
  secret.set(keys.signSeed, 0);
  secret.set(keys.boxSecret, 32);
  const aad = new TextEncoder().encode(owner);
  const wrapped = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: aad }, await passphraseKey(passphrase, salt), secret);
  secret.fill(0);
  await dbDo("readwrite", (s) => s.put({ salt, iv, wrapped: new Uint8Array(wrapped),
    signPublic: b64(keys.signPublic), boxPublic: b64(keys.boxPublic) }, owner));
}

export async function hasStoredKeys(owner) {
  return (await dbDo("readonly", (s) => s.get(owner))) !== undefined;
}

/** The keys kept for `owner`, unwrapped with the passphrase (an Error if it is wrong). */
export async function loadKeys(owner, passphrase) {
  const rec = await dbDo("readonly", (s) => s.get(owner));
  if (!rec) throw new Error("no keys kept in this browser: import your key folder");
  let secret;
  try {
    secret = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: rec.iv, additionalData: new TextEncoder().encode(owner) },
      await passphraseKey(passphrase, rec.salt), rec.wrapped));
  } catch {
    throw new Error("wrong passphrase");
  }
  const keys = fromSecrets(secret.slice(0, 32), secret.slice(32));
  secret.fill(0);
  return keys;
}

export async function forgetKeys(owner) {
  await dbDo("readwrite", (s) => s.delete(owner));
}

// ------------------------------------------------------------------ opening things

/** Open a sealed box (a ring snapshot, a clip key) with the owner's box key. */
export function openSealed(sealedB64, keys) {
  try {
    return sodium.crypto_box_seal_open(unb64(sealedB64), keys.boxPublic, keys.boxSecret);
  } catch {
    throw new Error("this was not sealed to your key");
  }
}

/** Decrypt a clip (STREAM, ChaCha20-Poly1305) with its 32-byte key; the MP4's bytes. */
export function decryptClip(data, key) {
  if (data.length < HEADER + TAG) throw new Error("not an encrypted clip (too short)");
  const header = data.subarray(0, HEADER);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const magic = new TextDecoder().decode(header.subarray(0, 4));
  const chunk = view.getUint32(4);
  if (magic !== MAGIC || chunk === 0 || chunk > 1 << 24) throw new Error("not an encrypted clip (bad header)");
  const prefix = header.subarray(8, 15);
  const block = chunk + TAG;
  const count = Math.max(1, Math.ceil((data.length - HEADER) / block));
  const parts = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const start = HEADER + i * block;
    const sealed = data.subarray(start, Math.min(start + block, data.length));
    const nonce = new Uint8Array(12);
    nonce.set(prefix, 0);
    new DataView(nonce.buffer).setUint32(7, i);
    nonce[11] = i === count - 1 ? 1 : 0;
    let plain;
    try {
      plain = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(null, sealed, header, nonce, key);
    } catch {
      throw new Error("clip does not decrypt: wrong key, or the file was altered or truncated");
    }
    parts.push(plain);
    total += plain.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export async function sha256Hex(data) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ------------------------------------------------------------------ signing decisions

/** Python's json.dumps(sort_keys=True, separators=(",", ":")) (ensure_ascii included). */
export function canonical(value) {
  if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
  if (value !== null && typeof value === "object") {
    return "{" + Object.keys(value).sort()
      .map((k) => canonical(k) + ":" + canonical(value[k])).join(",") + "}";
  }
  if (typeof value === "number" && !Number.isInteger(value)) throw new Error("decisions hold integers only");
  const text = JSON.stringify(value);
  return typeof value === "string"
    ? text.replace(/[\u0080-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"))
    : text;
}

function signDecision(payload, keys) {
  const body = new TextEncoder().encode(canonical(payload));
  const signature = sodium.crypto_sign_detached(body, keys.signSecret);
  const envelope = JSON.stringify({ payload: b64(body), signature: b64(signature) });
  return b64(new TextEncoder().encode(envelope));
}

const nonce = () => b64(crypto.getRandomValues(new Uint8Array(16)));
const inHours = (h) => Math.floor(Date.now() / 1000) + Math.round(h * 3600);

/**
 * Each clip's key, opened from its `owner_key` (sealed to the owner by the doorbell) and
 * sealed to `recipientKey` (base64 X25519): {clip_id: base64 of 80 bytes}, one per clip
 * (docs/formats.md §4-5).  The opened key lives only here, and is wiped after sealing.
 */
export function resealKeys(keys, clips, recipientKey) {
  const recipient = unb64(recipientKey);
  if (recipient.length !== 32) throw new Error("the recipient's key is not a 32-byte X25519 key");
  const out = {};
  for (const c of clips) {
    if (!c.owner_key) throw new Error(`clip ${c.clip_id} has no key sealed to you`);
    const key = openSealed(c.owner_key, keys);
    if (key.length !== 32) throw new Error(`clip ${c.clip_id}'s sealed key is not 32 bytes`);
    out[c.clip_id] = b64(sodium.crypto_box_seal(key, recipient));
    key.fill(0);
  }
  return out;
}

/**
 * A signed Approval (protocol.decisions.Approval) of `clips` (each {clip_id, owner_key})
 * to `requesterKey` (base64): their keys re-sealed to it inside the signed payload.
 */
export function signApproval(keys, { requestId, device, clips, requesterKey, validHours = 24 }) {
  if (!clips.length) throw new Error("no clips to approve");
  return signDecision({
    type: "approval", request_id: requestId, device,
    clip_ids: clips.map((c) => c.clip_id).sort(),
    requester_key: requesterKey, keys: resealKeys(keys, clips, requesterKey),
    expires: inHours(validHours), nonce: nonce(),
  }, keys);
}

/** A signed Deletion (protocol.decisions.Deletion) of one clip. */
export function signDeletion(keys, { device, clipId }) {
  return signDecision({
    type: "delete", device, clip_id: clipId, expires: inHours(1), nonce: nonce(),
  }, keys);
}

// ------------------------------------------------------------------ privacy masks

const MASK_SCALE = 10000;

/** Python's round(v * 10000) (half to even), so the page encodes the same integers as
 * protocol.decisions.mask_points (the relay compares them with a bystander's proposal). */
function scaled(v) {
  if (typeof v !== "number" || !(v >= 0 && v <= 1)) throw new Error(`a mask point must be a fraction of the frame in [0, 1], not ${v}`);
  const y = v * MASK_SCALE;
  const r = Math.round(y);
  return Math.abs(y % 1) === 0.5 ? 2 * Math.round(y / 2) : r;
}

/** [[x, y], ...] in fractions of the frame → the integer points a mask holds. */
export function maskPoints(polygon) {
  return polygon.map(([x, y]) => [scaled(x), scaled(y)]);
}

/**
 * A signed MaskUpdate (protocol.decisions.MaskUpdate, docs/formats.md §4): the *whole*
 * set of `device`'s owner-added masks, each {name, points} with integer points, sorted by
 * name; `issued` must be newer than the set the doorbell holds, and `previous` the hash
 * of the signed set it replaces (null only when the doorbell holds none): the doorbell
 * refuses ("stale") a set built on another one.
 */
export function signMaskUpdate(keys, { device, masks, issued, previous = null, reason = null, validHours = 24 * 7 }) {
  const sorted = [...masks].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return signDecision({
    type: "masks", device, issued, reason, previous,
    masks: sorted.map((m) => ({ name: m.name, points: m.points })),
    expires: inHours(validHours), nonce: nonce(),
  }, keys);
}

/**
 * The payload of a signed MaskUpdate of `device` if the owner's own key (`keys.signPublic`,
 * derived from the unlocked secret, not from anything the relay says) signed it; else an
 * Error.  Used on the set this browser keeps, before building on it.
 */
export function openMaskUpdate(signed, keys, device) {
  let payload;
  try {
    const envelope = JSON.parse(new TextDecoder().decode(unb64(signed)));
    const body = unb64(envelope.payload);
    if (!sodium.crypto_sign_verify_detached(unb64(envelope.signature), body, keys.signPublic)) throw new Error("bad signature");
    payload = JSON.parse(new TextDecoder().decode(body));
  } catch (err) {
    throw new Error(`the kept mask set of ${device} does not check out (${err.message})`);
  }
  if (payload.type !== "masks" || payload.device !== device || !Array.isArray(payload.masks)) {
    throw new Error(`the kept mask set is not a mask set of ${device}`);
  }
  return payload;
}

/** SHA-256 (hex) of the signed body: protocol.decisions.decision_hash, as the doorbell
 * announces it (masks_applied). */
export async function decisionHash(signed) {
  const envelope = JSON.parse(new TextDecoder().decode(unb64(signed)));
  return sha256Hex(unb64(envelope.payload));
}

const MASKS_KEY = (owner, device) => `masks/${owner}/${device}`;

/** The signed mask set this browser last signed for `device` (null: none), checked with
 * the owner's key: {signed, payload}. */
export async function keptMasks(owner, device, keys) {
  const signed = await dbDo("readonly", (s) => s.get(MASKS_KEY(owner, device)));
  if (signed === undefined) return null;
  return { signed, payload: openMaskUpdate(signed, keys, device) };
}

/** The doorbells this browser keeps a signed mask set of. */
export async function keptMaskDevices(owner) {
  const prefix = MASKS_KEY(owner, "");
  const all = await dbDo("readonly", (s) => s.getAllKeys());
  return all.filter((k) => typeof k === "string" && k.startsWith(prefix)).map((k) => k.slice(prefix.length)).sort();
}

/** Keep `signed` as `device`'s current set: before it is sent (see docs/webapp.md). */
export async function keepMasks(owner, device, signed) {
  await dbDo("readwrite", (s) => s.put(signed, MASKS_KEY(owner, device)));
}

const MASKS_SENT_KEY = (owner, device) => `maskssent/${owner}/${device}`;

/** Note that the relay took the kept set of `device` (its answer named `hash`). */
export async function markMasksSent(owner, device, hash) {
  await dbDo("readwrite", (s) => s.put(hash, MASKS_SENT_KEY(owner, device)));
}

/** The hash of the last set of `device` the relay took (undefined: none). */
export async function sentMasks(owner, device) {
  return dbDo("readonly", (s) => s.get(MASKS_SENT_KEY(owner, device)));
}

/** A fresh request id for the owner's own view: "view-" and 16 hex digits (formats.md §3.6). */
export function viewRequestId() {
  return "view-" + sodium.to_hex(crypto.getRandomValues(new Uint8Array(8)));
}

// ------------------------------------------------------------------ the ask's public proof

async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}

/**
 * Does the ask's `commitment` (docs/formats.md §8) open to a leaf describing this very
 * ask (its id, request and doorbell) whose RFC 9162 §2.1.3.2 audit path leads to
 * `commitment.root`?  As `footage asks` checks it; false on anything malformed.
 */
export async function checkAskProof(ask) {
  try {
    const proof = ask.commitment || {};
    const body = unb64(proof.leaf);
    const opened = JSON.parse(new TextDecoder().decode(body));
    if (opened.ask !== ask.id || opened.request !== ask.request_id || opened.device !== ask.device) {
      return false;
    }
    let fn = proof.index;
    let sn = proof.size - 1;
    if (!Number.isInteger(fn) || !Number.isInteger(sn) || fn < 0 || fn > sn) return false;
    let r = await sha256(new Uint8Array([0]), body);
    for (const hex of proof.path) {
      const p = sodium.from_hex(hex);
      if (sn === 0 || p.length !== 32) return false;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(new Uint8Array([1]), p, r);
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await sha256(new Uint8Array([1]), r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    return sn === 0 && sodium.to_hex(r) === proof.root;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------ requesters' signed requests
// As `footage approve` (footage/cli.py requester_box, footage/pins.py; docs/formats.md
// §3.1.1): clip keys are sealed to the box key the *requester* signed, after checking the
// signature, that the ask says what was signed, and the signing key against the one
// pinned in this browser for (relay origin, requester name) on first use.

const SIGNED_FIELDS = ["lat", "lon", "radius_m", "start", "end", "reason", "case_ref", "basis"];
const PIN_KEY = (origin, name) => `reqpin/${origin}/${name}`;

/** protocol.reqsig.fingerprint: the first 32 hex digits of SHA-256(key), in groups of 8. */
export async function fingerprint(signPublic) {
  const h = (await sha256Hex(signPublic)).slice(0, 32);
  return h.match(/.{8}/g).join("-");
}

/** protocol.reqsig.verify_request: the payload if `signed` ({payload, signature}) is
 * signed by the `sign_public` inside it, else an Error. */
export function verifyRequest(signed) {
  if (signed === null || typeof signed !== "object" || Object.keys(signed).sort().join() !== "payload,signature") {
    throw new Error("a signed request is {payload, signature}");
  }
  let body, payload, key, box;
  try {
    body = unb64(signed.payload);
    payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    key = unb64(payload.sign_public);
    box = unb64(payload.box_public);
  } catch {
    throw new Error("the signed request is not readable");
  }
  if (key.length !== 32 || box.length !== 32) throw new Error("the signed request's keys are not 32 bytes");
  let ok = false;
  try {
    ok = sodium.crypto_sign_verify_detached(unb64(signed.signature), body, key);
  } catch {
    ok = false;
  }
  if (!ok) throw new Error("the signed request's signature does not verify");
  return payload;
}

/** protocol.reqsig.matches on an ask: the signed fields where it differs from `payload`. */
function askDiffers(payload, ask) {
  const shown = {
    ...ask, lat: ask.center?.[0], lon: ask.center?.[1],
    demand: ((ask.legal_demands || [])[0] || {}).docket,
  };
  const wrong = SIGNED_FIELDS.filter((k) => (payload[k] ?? null) !== (shown[k] ?? null));
  if ((payload.demand || null) !== (shown.demand || null)) wrong.push("demand");
  return wrong;
}

/**
 * Who the clip keys of `ask` may be sealed to: {box (base64), signed (bool), pin ("new",
 * "known" or null when unsigned), fingerprint (or null)}; an Error (nothing to seal to)
 * when the signature fails, the ask differs from what was signed, the signing key is not
 * the one pinned for the requester's name at `origin`, or a pinned requester's ask comes
 * unsigned.  With `pin`, a first-seen key is pinned (at approve time, as footage does).
 */
export async function requesterBox(ask, origin, { pin = false } = {}) {
  const key = PIN_KEY(origin, ask.requester);
  const pinned = await dbDo("readonly", (s) => s.get(key));
  if (ask.signed_request === null || ask.signed_request === undefined) {
    if (pinned !== undefined) {
      throw new Error(`REFUSED: ${ask.requester} signs their requests (key ${await fingerprint(unb64(pinned))} ` +
        "pinned) but this ask carries no signed request; nothing was sealed");
    }
    return { box: ask.requester_key, signed: false, pin: null, fingerprint: null };
  }
  let payload;
  try {
    payload = verifyRequest(ask.signed_request);
  } catch (err) {
    throw new Error(`refused: ${err.message}; nothing was sealed`);
  }
  const wrong = askDiffers(payload, ask);
  if (wrong.length) {
    throw new Error(`refused: the ask differs from what the requester signed in ${wrong.join(", ")}; nothing was sealed`);
  }
  const signPublic = unb64(payload.sign_public);
  const print = await fingerprint(signPublic);
  if (pinned !== undefined && pinned !== b64(signPublic)) {
    throw new Error(`REFUSED: requester ${ask.requester} at ${origin} signed with a different key (${print}) ` +
      `than the one pinned in this browser (${await fingerprint(unb64(pinned))}); nothing was sealed`);
  }
  if (pinned === undefined && pin) await dbDo("readwrite", (s) => s.put(b64(signPublic), key));
  return { box: payload.box_public, signed: true, pin: pinned === undefined ? "new" : "known", fingerprint: print };
}
