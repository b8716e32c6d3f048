// Flotilla's dashboard: keeps a release page live from its server-sent event stream.
// New events are appended as they come; the page's changing parts (#live) are fetched
// again from the server, which renders and escapes them. No framework, no other origin.
"use strict";

(function () {
  const live = document.getElementById("live");
  const list = document.getElementById("events");
  const status = document.getElementById("stream-state");
  if (!live || !list) {
    return;
  }
  const release = live.dataset.release;
  const base = "/ui/releases/" + encodeURIComponent(release);
  let refreshing = false;
  let again = false;
  // A big release sends events many times a second: the live part is fetched again at
  // most every 2 s, and never more often than ten times as long as the last fetch took,
  // so a page of thousands of hosts costs the coordinator a bounded share of its time.
  const MIN_GAP_MS = 2000;
  let gap = 0;

  // Fetches the live parts again; one fetch at a time, one more if events came meanwhile.
  async function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    try {
      do {
        again = false;
        await new Promise(function (done) { setTimeout(done, gap); });
        const started = performance.now();
        const answer = await fetch(base + "?part=live", { cache: "no-store", credentials: "same-origin" });
        gap = Math.max(MIN_GAP_MS, 10 * (performance.now() - started));
        if (answer.ok) {
          // What the reader opened stays open.
          const open = new Set(Array.from(live.querySelectorAll("details[open][data-key]"), d => d.dataset.key));
          live.innerHTML = await answer.text();
          live.querySelectorAll("details[data-key]").forEach(d => { d.open = open.has(d.dataset.key); });
        }
      } while (again);
    } catch (e) {
      say("could not refresh: " + e);
    } finally {
      refreshing = false;
    }
  }

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  if (live.dataset.finished === "true") {
    say("The release has finished.");
    return;
  }
  // Resumes after the last event the page was rendered with; a reconnecting
  // EventSource sends Last-Event-ID itself.
  const source = new EventSource(base + "/events?after=" + (list.dataset.after || "0"));
  source.addEventListener("open", function () { say("Live."); });
  source.addEventListener("error", function () { say("Connection lost; reconnecting…"); });
  source.addEventListener("release", function (message) {
    const event = JSON.parse(message.data);
    if (list.querySelector('li[data-index="' + event.index + '"]')) {
      return;
    }
    // The server rendered and escaped the row.
    list.insertAdjacentHTML("beforeend", event.html);
    list.dataset.after = String(event.index);
    refresh();
  });
  source.addEventListener("end", function () {
    source.close();
    say("The release has finished.");
    refresh();
  });
})();

// Every action form asks before it posts (forms swapped in by a refresh too).
document.addEventListener("submit", function (event) {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
