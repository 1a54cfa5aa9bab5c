// Coal Mine dashboard: progressive enhancement only; every page works without this file.
"use strict";

(function () {
  const zoneChosen = document.body.dataset.zoneChosen === "yes";

  function pad(n) { return String(n).padStart(2, "0"); }

  // "2026-03-08 03:30 EDT" in the browser's zone, like the server's rendering.
  function localText(date) {
    const parts = {};
    for (const p of new Intl.DateTimeFormat("en-US", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(date)) { parts[p.type] = p.value; }
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute} ${parts.timeZoneName}`;
  }

  function utcText(date) {
    return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
      `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} UTC`;
  }

  // Without a chosen zone the server renders UTC; show the browser's own zone instead.
  function localize(root) {
    if (zoneChosen) return;
    for (const el of root.querySelectorAll("time[datetime]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) continue;
      if (el.hasAttribute("data-relative")) {
        el.title = `${localText(date)} · ${utcText(date)}`;
      } else {
        el.textContent = localText(date);
        el.title = utcText(date);
      }
    }
    const name = document.getElementById("zone-name");
    if (name) name.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  function enableCopyButtons(root) {
    for (const button of root.querySelectorAll("button.copy[data-copy]")) {
      const field = document.getElementById(button.dataset.copy);
      if (!field) continue;
      button.hidden = false;
      button.addEventListener("click", async () => {
        field.select();
        try {
          await navigator.clipboard.writeText(field.value);
          button.textContent = "Copied";
        } catch (e) {
          button.textContent = "Press Ctrl+C";
        }
        setTimeout(() => { button.textContent = "Copy"; }, 2000);
      });
    }
  }

  // The list refreshes itself in place, so filters, focus and scroll position stay.
  function autoRefresh() {
    const live = document.getElementById("live");
    if (!live) return;
    const seconds = Number(live.dataset.refresh) || 30;
    setInterval(async () => {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (!response.ok && response.status !== 400) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = doc.getElementById("live");
        if (!fresh) return;
        live.replaceChildren(...fresh.childNodes);
        localize(live);
      } catch (e) {
        // Offline for a moment: the next round tries again.
      }
    }, seconds * 1000);
  }

  localize(document);
  enableCopyButtons(document);
  autoRefresh();
})();
