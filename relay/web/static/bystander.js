// The bystanders' form: solves the relay's proof of work with WebCrypto SHA-256 and
// files the request (docs/formats.md §3.7); then reads the answers with the secret.

const $ = (id) => document.getElementById(id);
const REASONS = {
  not_shown: "the clips do not show you",
  cannot_identify: "the owner cannot tell which person in the clips is you",
  others_shown: "a copy would show other people",
  legal_hold: "the footage must be kept (a claim or an investigation)",
  excessive: "the owner considers the request unfounded or excessive",
  spot_needed: "the owner needs to film that spot",
};

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function zeroBits(bytes) {
  let n = 0;
  for (const b of bytes) {
    if (b === 0) { n += 8; continue; }
    return n + Math.clz32(b) - 24;
  }
  return n;
}

// Batches of digests in flight at once: WebCrypto is asynchronous, one at a time is slow.
async function solve(challenge, difficulty, progress) {
  const enc = new TextEncoder();
  const batch = 512;
  for (let base = 0; ; base += batch) {
    const tries = [];
    for (let i = base; i < base + batch; i++) {
      tries.push(crypto.subtle.digest("SHA-256", enc.encode(`${challenge}:${i}`)));
    }
    const digests = await Promise.all(tries);
    for (let j = 0; j < batch; j++) {
      if (zeroBits(new Uint8Array(digests[j])) >= difficulty) return String(base + j);
    }
    if (base % (batch * 64) === 0) progress(base + batch);
  }
}

async function json(resp) {
  let body = {};
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) throw new Error(body.reason || `the relay said ${resp.status}`);
  return body;
}

function seconds(local) {
  // datetime-local has no zone: the form asks for UTC.
  return Date.parse(`${local}Z`) / 1000;
}

function polygon(text) {
  return text.trim().split(/\s+/).map((p) => p.split(",").map(Number));
}

$("kind").addEventListener("change", () => {
  $("polygon-label").hidden = $("kind").value !== "stop_filming";
  $("key-label").hidden = $("kind").value !== "copy";
});

$("request-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("send").disabled = true;
  try {
    const body = {
      lat: Number($("lat").value),
      lon: Number($("lon").value),
      radius_m: Number($("radius").value),
      start: seconds($("from").value),
      end: seconds($("to").value),
      kind: $("kind").value,
      description: $("description").value,
    };
    if (body.kind === "copy") body.box_public = $("box-public").value.trim();
    if (body.kind === "stop_filming") body.polygon = polygon($("polygon").value);
    const ch = await json(await fetch("/v1/bystander/challenge"));
    $("progress").textContent = `Working on the relay's puzzle (${ch.difficulty} bits)…`;
    body.challenge = ch.challenge;
    body.nonce = await solve(ch.challenge, ch.difficulty, (n) => {
      $("progress").textContent = `Working on the relay's puzzle: ${n} tries…`;
    });
    $("progress").textContent = "Puzzle solved; sending…";
    const sent = await json(await fetch("/v1/bystander/requests", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }));
    $("sent-id").textContent = sent.id;
    $("sent-token").textContent = sent.status_token;
    $("status-id").value = sent.id;
    $("status-token").value = sent.status_token;
    $("sent").hidden = false;
    $("progress").textContent = "";
    say(`Sent. Owners have until ${new Date(sent.deadline * 1000).toUTCString()} to answer.`);
  } catch (err) {
    $("progress").textContent = "";
    say(err.message, true);
  } finally {
    $("send").disabled = false;
  }
});

$("status-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const id = encodeURIComponent($("status-id").value.trim());
    const st = await json(await fetch(`/v1/bystander/requests/${id}`, {
      headers: { Authorization: `Bearer ${$("status-token").value.trim()}` },
    }));
    $("answers-state").textContent = st.status === "open"
      ? `Open until ${new Date(st.deadline * 1000).toUTCString()}.`
      : "Closed: the deadline has passed.";
    const list = $("answers");
    list.replaceChildren();
    for (const a of st.answers) {
      const li = document.createElement("li");
      li.className = "answer";
      if (a.outcome === "copy") {
        li.textContent = `An owner sent you a copy (${(a.released || []).length} clip(s)): ` +
          "fetch it with: footage bystander fetch";
      } else if (a.outcome === "erase") {
        // Ordered is not done: the doorbell confirms each deletion (it may be offline).
        li.textContent = a.erased === a.clips
          ? `An owner erased ${a.clips} clip(s).`
          : `An owner ordered ${a.clips} clip(s) erased; the doorbell has confirmed ` +
            `${a.erased || 0} so far.`;
      } else if (a.outcome === "decline") {
        li.textContent = `An owner declined: ${REASONS[a.reason] || a.reason}.`;
      } else {
        li.textContent = "An owner agreed to stop filming the spot.";
      }
      list.append(li);
    }
    if (!st.answers.length) $("answers-state").textContent += " No answer yet.";
  } catch (err) {
    say(err.message, true);
  }
});
