// The owners' web app's service worker: shows a ring pushed while the page is closed.
// The push service delivered it encrypted (RFC 8291); the browser has decrypted it.
// It holds only the doorbell, the time and the ring id: the snapshot stays sealed at
// the relay until the page, with the owner's keys, opens it.

self.addEventListener("push", (event) => {
  let ring = {};
  try {
    ring = event.data ? event.data.json() : {};
  } catch {
    ring = {};
  }
  if (ring.kind === "reminder") {
    // A passer-by's request: only its ask id and deadline travel through the push service.
    const by = ring.deadline ? new Date(ring.deadline * 1000).toLocaleDateString() : "soon";
    event.waitUntil(self.registration.showNotification("A passer-by waits for your answer", {
      body: `Answer their request by ${by}, or it lapses.`,
      tag: ring.ask || "reminder",
      data: ring,
    }));
    return;
  }
  const at = ring.at ? new Date(ring.at).toLocaleTimeString() : "just now";
  event.waitUntil(self.registration.showNotification("Someone is at the door", {
    body: `${ring.device || "Your doorbell"} rang at ${at}`,
    tag: ring.ring_id || "ring",
    data: ring,
    requireInteraction: true,
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    for (const c of await self.clients.matchAll({ type: "window" })) {
      if (new URL(c.url).pathname.startsWith("/app/")) return c.focus();
    }
    return self.clients.openWindow("/app/");
  })());
});
