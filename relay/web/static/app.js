// The owners' web app: sign in, unlock keys, then rings (live), clips, asks and the log.
// Every cryptographic step is in crypto.js; this file only talks to the relay and the page.

import * as oc from "./crypto.js";

const $ = (id) => document.getElementById(id);
const state = { me: null, keys: null, live: null, rings: new Map(), snapshots: new Map(), sounds: 0 };

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.me) headers["X-CSRF-Token"] = state.me.csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.reason || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

const when = (iso) => new Date(iso).toLocaleString();
const whenTs = (s) => new Date(s * 1000).toLocaleString();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

// ------------------------------------------------------------------ sign-in and keys

async function start() {
  await oc.ready();
  $("sign-in-form").addEventListener("submit", signIn);
  $("import-form").addEventListener("submit", importKeys);
  $("unlock-form").addEventListener("submit", unlock);
  $("forget-keys").addEventListener("click", forget);
  $("sign-out").addEventListener("click", signOut);
  $("refresh").addEventListener("click", refresh);
  $("notify").addEventListener("click", subscribePush);
  try {
    state.me = await api("GET", "/app/api/me");
    await signedIn();
  } catch (err) {
    if (err.status !== 401) say(err.message, true);
    $("sign-in").hidden = false;
  }
  document.body.dataset.ready = "1";
}

async function signIn(ev) {
  ev.preventDefault();
  try {
    await api("POST", "/app/api/session", { token: $("token").value });
    $("token").value = "";
    state.me = await api("GET", "/app/api/me");
    $("sign-in").hidden = true;
    await signedIn();
  } catch (err) {
    say(`sign-in failed: ${err.message}`, true);
  }
}

async function signOut() {
  await api("POST", "/app/api/session/end").catch(() => {});
  location.reload();
}

async function signedIn() {
  $("who").textContent = state.me.owner;
  $("sign-out").hidden = false;
  $("keys").hidden = false;
  const kept = await oc.hasStoredKeys(state.me.owner);
  $("import-form").hidden = kept;
  $("unlock-form").hidden = !kept;
  say(kept ? "Enter your passphrase to unlock your keys." : "Import your keys (once per browser).");
}

function checkKeys(keys) {
  if (oc.b64(keys.signPublic) !== state.me.sign_public || oc.b64(keys.boxPublic) !== state.me.box_public) {
    throw new Error("these are not the keys the relay has for you");
  }
}

async function importKeys(ev) {
  ev.preventDefault();
  try {
    const files = {};
    for (const f of $("key-files").files) files[f.name] = await f.text();
    const keys = oc.keysFromFolder(files);
    checkKeys(keys);
    await oc.storeKeys(state.me.owner, keys, $("new-passphrase").value);
    $("new-passphrase").value = "";
    $("key-files").value = "";
    await unlocked(keys);
  } catch (err) {
    say(`import failed: ${err.message}`, true);
  }
}

async function unlock(ev) {
  ev.preventDefault();
  try {
    const keys = await oc.loadKeys(state.me.owner, $("passphrase").value);
    $("passphrase").value = "";
    checkKeys(keys);
    await unlocked(keys);
  } catch (err) {
    say(`unlock failed: ${err.message}`, true);
  }
}

async function forget() {
  await oc.forgetKeys(state.me.owner);
  await signedIn();
}

async function unlocked(keys) {
  state.keys = keys;
  $("keys").hidden = true;
  $("main").hidden = false;
  say("Keys unlocked.");
  $("refresh").hidden = false;
  offerPush();
  openLive();
  await loadRings();  // first: the asks' mask previews use the latest snapshots
  await Promise.all([loadClips(), loadAsks(), loadLog(), loadMasks()]);
  document.body.dataset.unlocked = "1";
}

async function refresh() {
  document.body.dataset.refreshed = "0";
  await loadRings();
  await Promise.all([loadClips(), loadAsks(), loadLog(), loadMasks()]);
  document.body.dataset.refreshed = "1";
}

// ------------------------------------------------------------------ rings, live

function openLive() {
  if (state.live) state.live.close();
  const live = new EventSource("/app/api/live");
  live.addEventListener("open", () => { document.body.dataset.live = "1"; });
  live.addEventListener("event", (e) => {
    const ev = JSON.parse(e.data);
    if (ev.type === "ring") { showRing({ ...ev, sealed: null }, true); chime(); }
    else if (ev.type === "motion_start" || ev.type === "motion_end") showMotion(ev, true);
  });
  live.addEventListener("reminder", async (e) => {
    const r = JSON.parse(e.data);
    say(`A passer-by waits for your answer (ask ${r.ask}) until ${whenTs(r.deadline)}.`);
    await loadAsks();
  });
  live.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    const ring = state.rings.get(snap.ring_id);
    if (ring) showSnapshot(ring, snap.sealed);
    else showRing({ id: snap.ring_id, device: snap.device, at: snap.at, sealed: snap.sealed }, true);
  });
  state.live = live;
}

async function loadRings() {
  for (const ev of (await api("GET", "/app/api/events")).reverse()) {
    if (ev.type === "ring") showRing(ev, false);
    else if (ev.type === "motion_start" || ev.type === "motion_end") showMotion(ev, false);
  }
}

function showMotion(ev, fresh) {
  if (state.rings.has(ev.id)) return;
  const what = ev.type === "motion_start" ? "Motion" : "Motion ended";
  const li = el("li", { class: fresh ? "motion fresh" : "motion", "data-event": ev.id, "data-type": ev.type },
    el("strong", {}, what), ` at ${ev.device}, `, el("time", {}, when(ev.at)));
  state.rings.set(ev.id, li);
  $("rings").prepend(li);
}

function showRing(ring, fresh) {
  if (state.rings.has(ring.id)) return;
  const li = el("li", { class: fresh ? "ring fresh" : "ring", "data-ring": ring.id, "data-device": ring.device },
    el("strong", {}, "Ring"), ` at ${ring.device}, `, el("time", {}, when(ring.at)));
  state.rings.set(ring.id, li);
  $("rings").prepend(li);
  if (ring.sealed) showSnapshot(li, ring.sealed);
}

function showSnapshot(li, sealed) {
  if (li.querySelector("img")) return;
  try {
    const jpeg = oc.openSealed(sealed, state.keys);
    const img = el("img", { alt: "who was at the door" });
    img.addEventListener("load", () => li.setAttribute("data-snapshot", "shown"), { once: true });
    img.src = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    if (li.dataset.device) state.snapshots.set(li.dataset.device, img.src);
    li.append(img);
  } catch (err) {
    li.append(el("p", { class: "error" }, `snapshot: ${err.message}`));
  }
}

function chime() {
  // A two-tone ding-dong from WebAudio: no sound file, nothing from elsewhere.
  try {
    const ctx = new AudioContext();
    [659, 523].forEach((f, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = f;
      gain.gain.setValueAtTime(0.2, ctx.currentTime + i * 0.4);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + i * 0.4 + 0.38);
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + i * 0.4);
      osc.stop(ctx.currentTime + i * 0.4 + 0.4);
    });
    state.sounds += 1;
    document.body.dataset.chimes = String(state.sounds);
  } catch (err) {
    console.warn("no sound:", err);
  }
}

// ------------------------------------------------------------------ web push

async function offerPush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) return;
  try {
    state.pushKey = (await api("GET", "/app/api/push")).application_server_key;
    if (!state.pushKey) return;
    await navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" });
    document.body.dataset.serviceWorker = "1";
    $("notify").hidden = false;
  } catch (err) {
    console.warn("web push unavailable:", err.message);
  }
}

async function subscribePush() {
  try {
    if ((await Notification.requestPermission()) !== "granted") throw new Error("notifications are blocked");
    const reg = await navigator.serviceWorker.ready;
    const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: state.pushKey });
    await api("POST", "/app/api/push/subscribe", sub.toJSON());
    say("This browser will be notified of rings while the page is closed.");
    $("notify").hidden = true;
  } catch (err) {
    say(`cannot subscribe: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ clips

async function loadClips() {
  const list = $("clips");
  list.replaceChildren();
  for (const c of await api("GET", "/app/api/clips")) {
    const play = el("button", { type: "button" }, "Play");
    play.addEventListener("click", () => playClip(c, play));
    const del = el("button", { type: "button" }, "Delete for good");
    del.addEventListener("click", () => deleteClip(c, del));
    list.append(el("li", { "data-clip": c.clip_id },
      el("strong", {}, c.trigger), ` at ${c.device}, `, el("time", {}, when(c.start)),
      el("span", { class: "meta" }, ` ${c.duration_s.toFixed(1)} s, ${c.width}×${c.height}`),
      el("div", {}, play, del)));
  }
}

async function playClip(clip, button) {
  button.disabled = true;
  try {
    say(`asking ${clip.device} for the clip…`);
    // footage view's path: the clip released to the owner's own key, and only to it.
    const requestId = oc.viewRequestId();
    const signed = oc.signApproval(state.keys, {
      requestId, device: clip.device, clips: [clip],
      requesterKey: state.me.box_public, validHours: 1,
    });
    const base = `/app/api/clips/${encodeURIComponent(clip.device)}/${encodeURIComponent(clip.clip_id)}/play`;
    await api("POST", base, { signed });
    let got = { ready: false };
    for (let i = 0; i < 600 && !got.ready; i++) {
      got = await api("GET", `${base}/${requestId}`);
      if (!got.ready) await new Promise((r) => setTimeout(r, 100));
    }
    if (!got.ready) throw new Error("the doorbell did not upload the clip in time");
    const resp = await fetch(got.download_url, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`download failed: HTTP ${resp.status}`);
    const data = new Uint8Array(await resp.arrayBuffer());
    if ((await oc.sha256Hex(data)) !== got.sha256) throw new Error("the download is not what the doorbell sent");
    const mp4 = oc.decryptClip(data, oc.openSealed(got.wrapped_key, state.keys));
    const url = URL.createObjectURL(new Blob([mp4], { type: "video/mp4" }));
    const video = $("video");
    video.dataset.clip = clip.clip_id;
    video.src = url;
    $("download").href = url;
    $("download").download = `${clip.device}-${clip.clip_id}.mp4`;
    $("player").hidden = false;
    say(`playing ${clip.clip_id}`);
    await video.play().catch(() => {});
  } catch (err) {
    say(`cannot play: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function deleteClip(clip, button) {
  button.disabled = true;
  try {
    const signed = oc.signDeletion(state.keys, { device: clip.device, clipId: clip.clip_id });
    await api("POST", `/app/api/clips/${encodeURIComponent(clip.device)}/${encodeURIComponent(clip.clip_id)}/delete`, { signed });
    say(`deletion of ${clip.clip_id} sent to ${clip.device}`);
    document.querySelector(`li[data-clip="${CSS.escape(clip.clip_id)}"]`)?.setAttribute("data-deleting", "1");
  } catch (err) {
    say(`cannot delete: ${err.message}`, true);
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ asks and the log

async function loadAsks() {
  const list = $("asks");
  list.replaceChildren();
  for (const a of await api("GET", "/app/api/asks")) {
    if (a.bystander) {
      list.append(await bystanderAsk(a));
      continue;
    }
    const item = el("li", { "data-ask": a.id, "data-status": a.status },
      el("strong", {}, `${a.requester} (${a.requester_kind})`), ` — ${a.status}`,
      el("p", {}, `Reason: ${a.reason}`),
      el("p", {}, `Case: ${a.case_ref || "none"}; basis: ${a.basis}`),
      el("p", { class: "meta" }, `Area: ${a.center[0].toFixed(5)}, ${a.center[1].toFixed(5)} within ${Math.round(a.radius_m)} m; ` +
        `window: ${whenTs(a.start)} – ${whenTs(a.end)}; answer by ${whenTs(a.expires)}`),
      el("p", { class: "meta" }, `Your matching clips: ${a.clips.map((c) => `${c.clip_id} (${when(c.start)})`).join(", ") || "none"}`),
      (await oc.checkAskProof(a))
        ? el("p", { class: "meta", "data-proof": "ok" }, `On the public record under asks_root ${a.commitment.root}`)
        : el("p", { class: "error", "data-proof": "bad" }, "WARNING: this ask's proof does not check out"),
      await requesterLine(a));
    if (a.status === "pending") {
      const yes = el("button", { type: "button" }, "Approve");
      const no = el("button", { type: "button" }, "Deny");
      yes.addEventListener("click", () => decide(a, true));
      no.addEventListener("click", () => decide(a, false));
      item.append(el("div", {}, yes, no));
    }
    list.append(item);
  }
}

/** Who signed the request, as far as this browser can tell (nothing is pinned here: that
 * happens on approve, as `footage approve` does). */
async function requesterLine(a) {
  try {
    const got = await oc.requesterBox(a, location.origin);
    if (!got.signed) {
      return el("p", { class: "error", "data-signed": "no" },
        `WARNING: ${a.requester} did not sign this request; the clip keys would go to the key the relay names for them`);
    }
    const seen = got.pin === "known" ? "the key pinned in this browser" : "not pinned yet: compare it with the requester out of band";
    return el("p", { class: "meta", "data-signed": "ok", "data-fingerprint": got.fingerprint },
      `Signed by ${a.requester}, key fingerprint ${got.fingerprint} (${seen})`);
  } catch (err) {
    return el("p", { class: "error", "data-signed": "bad" }, `WARNING: ${err.message}`);
  }
}

// A passer-by's ask (issue 17): their description, the clips, the deadline, and the
// answers their kind allows (protocol/bystander.py ANSWERS).
const BYSTANDER_ANSWERS = { copy: ["copy", "erase", "decline"], erase: ["erase", "decline"], stop_filming: ["accept", "decline"] };
const BYSTANDER_KINDS = { copy: "a copy of footage of them", erase: "erasure of footage of them", stop_filming: "that you stop filming a spot" };
const DECLINE_REASONS = ["not_shown", "cannot_identify", "others_shown", "legal_hold", "excessive", "spot_needed"];

async function bystanderAsk(a) {
  const b = a.bystander;
  const item = el("li", { "data-ask": a.id, "data-status": a.status, "data-bystander": b.kind },
    el("strong", {}, `A passer-by asks for ${BYSTANDER_KINDS[b.kind] || b.kind}`), ` — ${a.status}`,
    el("p", {}, `They describe themselves: ${b.description}`),
    el("p", { class: "meta" }, `Window: ${whenTs(a.start)} – ${whenTs(a.end)}; answer by ${whenTs(a.expires)}`),
    el("p", { class: "meta" }, `Your matching clips: ${a.clips.map((c) => `${c.clip_id} (${when(c.start)})`).join(", ") || "none"}`));
  // The owner watches what the passer-by means before answering (footage view's path).
  const previews = el("div", { "data-previews": "1" });
  for (const c of a.clips.filter((c) => a.clip_ids.includes(c.clip_id))) {
    const play = el("button", { type: "button", "data-play": c.clip_id }, `Play ${c.clip_id}`);
    play.addEventListener("click", () => playClip(c, play));
    previews.append(play);
  }
  if (previews.childElementCount) item.append(previews);
  if (b.polygon) {
    item.append(el("p", { class: "meta" }, `Proposed mask (fractions of the picture): ${JSON.stringify(b.polygon)}`),
      maskPreview(b.polygon, state.snapshots.get(a.device)));
  }
  if (b.reminded_at && a.status === "pending") item.append(el("p", { class: "error", "data-reminder": "1" }, "Reminder: the deadline is near."));
  if (a.status === "pending") {
    const row = el("div", {});
    const labels = { copy: "Send a copy", erase: "Erase these clips", accept: "Accept the mask" };
    for (const answer of BYSTANDER_ANSWERS[b.kind] || []) {
      if (answer === "decline") continue;
      const button = el("button", { type: "button", "data-answer": answer }, labels[answer]);
      button.addEventListener("click", () => answerBystander(a, answer));
      row.append(button);
    }
    const reason = el("select", { "data-reason": "1" }, ...DECLINE_REASONS.map((r) => el("option", { value: r }, r)));
    const no = el("button", { type: "button", "data-answer": "decline" }, "Decline");
    no.addEventListener("click", () => answerBystander(a, "decline", reason.value));
    row.append(reason, no);
    item.append(row);
  }
  return item;
}

async function answerBystander(ask, answer, reason) {
  try {
    const clips = ask.clips.filter((c) => ask.clip_ids.includes(c.clip_id));
    const body = { answer };
    if (answer === "decline") body.reason = reason;
    if (answer === "copy") {
      body.approval = oc.signApproval(state.keys, {
        requestId: ask.request_id, device: ask.device, clips, requesterKey: ask.requester_key,
      });
    }
    if (answer === "erase") {
      body.deletions = Object.fromEntries(clips.map((c) => [c.clip_id,
        oc.signDeletion(state.keys, { device: ask.device, clipId: c.clip_id })]));
    }
    if (answer === "accept") body.masks = await signAcceptedMask(ask);
    const out = await api("POST", `/app/api/asks/${encodeURIComponent(ask.id)}/answer`, body);
    if (answer === "accept") await checkMaskAnswer(out, body.masks, ask.device);
    const before = (out.released_before || []).length
      ? `; copies were released before for: ${out.released_before.join(", ")}` : "";
    say(`${out.status}: ${ask.id}${before}`);
    await Promise.all([loadAsks(), loadClips(), loadLog(), loadMasks()]);
  } catch (err) {
    say(`cannot answer: ${err.message}`, true);
  }
}

// ------------------------------------------------------------------ privacy masks
// A MaskUpdate is the whole set of a doorbell's owner-added masks.  The page builds each
// change on the newer of the set *this browser* last signed (kept in IndexedDB) and the
// set the doorbell last announced in force (served by the relay), both checked with the
// owner's own key, and names the one it replaces (`previous`): the doorbell refuses
// ("stale") a set built on any other, so a relay serving an older set can never make the
// owner sign a mask away, and masks added from `footage` or another browser are kept
// (docs/webapp.md, "Masks"; footage/masks.py choose_basis is the same rule).

const SVG = "http://www.w3.org/2000/svg";
const MASK_MAX_MASKS = 16;

/** The proposed polygon drawn over the doorbell's last snapshot (if the page has one). */
function maskPreview(polygon, snapshot) {
  const box = el("div", { class: "mask-preview", "data-mask-preview": "1" });
  if (snapshot) box.append(el("img", { src: snapshot, alt: "the doorbell's last snapshot" }));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 1 1");
  svg.setAttribute("preserveAspectRatio", "none");
  const shape = document.createElementNS(SVG, "polygon");
  shape.setAttribute("points", polygon.map(([x, y]) => `${x},${y}`).join(" "));
  shape.setAttribute("class", "proposed");
  svg.append(shape);
  box.append(svg);
  return box;
}

/** What the next change of `device` builds on: {base (a payload or null), previous (a
 * hash or null), note}.  As footage/masks.py choose_basis. */
async function maskBasis(device) {
  const kept = await oc.keptMasks(state.me.owner, device, state.keys);
  const held = await api("GET", `/app/api/devices/${encodeURIComponent(device)}/masks`);
  let remote = null;
  if (held.hash !== null) {
    if (typeof held.update !== "string" || (await oc.decisionHash(held.update)) !== held.hash) {
      throw new Error("the relay served a mask set that is not the one it names: refused");
    }
    try {
      remote = oc.openMaskUpdate(held.update, state.keys, device);
    } catch (err) {
      throw new Error(`the relay's mask set of ${device} does not check out: refused`);
    }
  }
  if (!kept) return { base: remote, previous: held.hash, note: null };
  if (remote && remote.issued >= kept.payload.issued) return { base: remote, previous: held.hash, note: null };
  // Newer here and built on the set in force: sent, not yet announced.
  if ((kept.payload.previous ?? null) === held.hash) {
    const keptHash = await oc.decisionHash(kept.signed);
    if ((await oc.sentMasks(state.me.owner, device)) === keptHash) return { base: kept.payload, previous: keptHash, note: null };
    // The relay did not take it: built on again in its place (had the relay delivered
    // it anyway, the doorbell refuses this one as stale; nothing is dropped).
    return { base: kept.payload, previous: held.hash, note: null };
  }
  // The doorbell holds none (a wiped card): the owner's masks again.
  if (!remote) return { base: kept.payload, previous: null, note: null };
  // Newer here but built on another set: refused (stale) or never applied.  Building on
  // it again would be refused forever; the set in force wins, and the owner is told.
  const note = "the doorbell holds a newer mask set than the one your last change here was built on, " +
    "so it was refused (stale) or never applied: fetched again, this change is built on the set " +
    "the doorbell holds; add again any mask of that change that is missing";
  return { base: remote, previous: held.hash, note };
}

/** Sign, keep (before it is sent: the relay may deliver it whatever it answers) and
 * return the next set of `device`: the set in force (see maskBasis) changed by
 * `change(masks)`. */
async function nextMaskSet(device, change, reason = null) {
  const { base, previous, note } = await maskBasis(device);
  if (note) say(note, true);
  const masks = change(base ? base.masks : []);
  if (masks.length > MASK_MAX_MASKS) throw new Error(`at most ${MASK_MAX_MASKS} owner masks per doorbell`);
  const now = Math.floor(Date.now() / 1000);
  const issued = base ? Math.max(now, base.issued + 1) : now;
  const signed = oc.signMaskUpdate(state.keys, { device, masks, issued, previous, reason });
  await oc.keepMasks(state.me.owner, device, signed);
  return signed;
}

/** Accepting a "stop filming" ask: the kept set plus the proposed polygon, as
 * `footage answer ASK accept` builds it. */
async function signAcceptedMask(ask) {
  const proposed = oc.maskPoints(ask.bystander.polygon);
  const name = "bystander-" + ask.id.replace(/[^A-Za-z0-9._-]/g, "-").slice(-54);
  return nextMaskSet(ask.device, (masks) => {
    if (masks.some((m) => JSON.stringify(m.points) === JSON.stringify(proposed))) return masks;
    if (masks.some((m) => m.name === name)) throw new Error(`a mask named ${name} exists already`);
    return [...masks, { name, points: proposed }];
  }, `bystander:${ask.request_id}`);
}

async function checkMaskAnswer(out, signed, device) {
  const digest = await oc.decisionHash(signed);
  if (out.hash !== digest) throw new Error(`the relay answered for another mask set (${out.hash}, not ${digest})`);
  await oc.markMasksSent(state.me.owner, device, digest);
}

async function loadMasks() {
  const list = $("masks");
  list.replaceChildren();
  const devices = [...new Set([...(state.me.devices || []), ...(await oc.keptMaskDevices(state.me.owner))])].sort();
  for (const device of devices) {
    let basis;
    try {
      basis = await maskBasis(device);
    } catch (err) {
      // Shown, not built on: a change would need a set the owner's key vouches for.
      list.append(el("li", { class: "error", "data-masks": device }, err.message));
      continue;
    }
    const { base, previous } = basis;
    if (!base) continue;
    let shown = previous;  // the set shown: the one in force, or (none announced) the kept one
    if (!shown) shown = await oc.decisionHash((await oc.keptMasks(state.me.owner, device, state.keys)).signed);
    const item = el("li", { "data-masks": device, "data-hash": shown },
      el("strong", {}, device), el("span", { class: "meta" }, ` set issued ${whenTs(base.issued)}`));
    if (!base.masks.length) item.append(el("p", { class: "meta" }, "no owner masks"));
    for (const m of base.masks) {
      const remove = el("button", { type: "button", "data-remove": m.name }, "Remove");
      remove.addEventListener("click", () => removeMask(device, m.name));
      item.append(el("p", { "data-mask": m.name }, `${m.name}: ${m.points.length} corners `, remove));
    }
    list.append(item);
  }
}

async function removeMask(device, name) {
  try {
    const signed = await nextMaskSet(device, (masks) => masks.filter((m) => m.name !== name));
    const out = await api("POST", `/app/api/devices/${encodeURIComponent(device)}/masks`, { signed });
    await checkMaskAnswer(out, signed, device);
    say(`mask ${name} removed: set ${out.hash} sent to ${device}`);
    await loadMasks();
  } catch (err) {
    say(`cannot remove the mask: ${err.message}`, true);
  }
}

async function decide(ask, approve) {
  say(`answering ${ask.id}…`);  // synchronous: no earlier answer's words stay on screen
  try {
    if (approve) {
      // The clips the ask names that are still on record, each with its owner-sealed key.
      const clips = ask.clips.filter((c) => ask.clip_ids.includes(c.clip_id));
      // Sealed to the box key the requester signed (formats §3.1.1), never to the relay's
      // word for it; a refusal here throws before anything is sealed or sent.
      const to = await oc.requesterBox(ask, location.origin, { pin: true });
      const signed = oc.signApproval(state.keys, {
        requestId: ask.request_id, device: ask.device, clips, requesterKey: to.box,
      });
      await api("POST", `/app/api/asks/${encodeURIComponent(ask.id)}/approve`, { signed });
      if (to.pin === "new") {
        say(`approved: ${ask.id}; pinned ${ask.requester}'s signing key, fingerprint ${to.fingerprint}: ` +
          "compare it with the requester out of band");
        await Promise.all([loadAsks(), loadLog()]);
        return;
      }
    } else {
      await api("POST", `/app/api/asks/${encodeURIComponent(ask.id)}/deny`);
    }
    say(`${approve ? "approved" : "denied"}: ${ask.id}`);
    await Promise.all([loadAsks(), loadLog()]);
  } catch (err) {
    say(`cannot answer: ${err.message}`, true);
  }
}

async function loadLog() {
  const [{ head, entries }, report] = await Promise.all([
    api("GET", "/app/api/log/head"), api("GET", "/app/api/report")]);
  $("log-head").textContent = head
    ? `${entries} entries; signed head: size ${head.size}, root ${head.root}`
    : "the log is empty";
  const rows = [["requests", "Requests"], ["refused_by_policy", "Refused by policy"], ["asks", "Owners asked"],
    ["approvals", "Approved"], ["denials", "Denied"], ["expired", "Expired"],
    ["clips_released", "Clips released"], ["legal_demands", "Legal demands"], ["deletions", "Deletions"]];
  $("report").replaceChildren(...rows.flatMap(([k, label]) => {
    const v = report[k];
    const n = typeof v === "object" ? Object.values(v).reduce((a, b) => a + b, 0) : v;
    return [el("dt", {}, label), el("dd", { "data-figure": k }, String(n))];
  }));
}

start();
