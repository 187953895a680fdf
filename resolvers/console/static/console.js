// The console's only script: keyboard shortcuts on the review page, the template
// studio's check as you type, and the health page's refresh in place. Every page works
// without it (forms and links do the work).
"use strict";

(function () {
  const page = document.body.dataset.page;
  const csrf = document.querySelector('meta[name="csrf-token"]');

  function typing(target) {
    return target instanceof HTMLElement &&
      (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  }

  function reviewShortcuts() {
    const form = document.getElementById("decide");
    const reason = document.getElementById("reason");
    if (!form || !reason) return;
    function decide(decision) {
      const button = form.querySelector('button[data-decision="' + decision + '"]');
      if (!reason.value.trim()) {
        reason.focus();
        reason.setCustomValidity("Give a reason first, then press the key again.");
        reason.reportValidity();
        return;
      }
      reason.setCustomValidity("");
      button.click();
    }
    reason.addEventListener("input", () => reason.setCustomValidity(""));
    reason.addEventListener("keydown", (event) => {
      if (event.key === "Escape") reason.blur();
    });
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      const next = document.getElementById("next-pair");
      if (event.key === "m") decide("merge");
      else if (event.key === "k") decide("keep_apart");
      else if (event.key === "j" && next) window.location.assign(next.href);
      else if (event.key === "n") { event.preventDefault(); reason.focus(); }
      else return;
      event.preventDefault();
    });
  }

  function studioCheck() {
    const form = document.getElementById("studio");
    const source = document.getElementById("source");
    const gutter = document.getElementById("gutter");
    const result = document.getElementById("check-result");
    if (!form || !source || !gutter || !result) return;
    let timer = null;
    let sent = 0;

    function drawGutter(errorLine) {
      const lines = source.value.split("\n").length;
      gutter.textContent = "";
      for (let n = 1; n <= lines; n++) {
        const span = document.createElement("span");
        span.textContent = String(n);
        if (n === errorLine) span.className = "error-line";
        gutter.appendChild(span);
        gutter.appendChild(document.createTextNode("\n"));
      }
      gutter.scrollTop = source.scrollTop;
    }

    function list(id, items) {
      const ul = document.getElementById(id);
      if (!ul) return;
      ul.textContent = "";
      if (!items.length) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "none";
        ul.appendChild(li);
      }
      for (const item of items) {
        const li = document.createElement("li");
        if (id === "variables") {
          const code = document.createElement("code");
          code.textContent = item;
          li.appendChild(code);
        } else {
          li.textContent = item;
        }
        ul.appendChild(li);
      }
    }

    function show(answer) {
      result.textContent = "";
      const p = document.createElement("p");
      if (answer.ok) {
        p.className = "notice ok";
        p.dataset.syntaxOk = "";
        p.textContent = "The template parses.";
      } else {
        p.className = "notice error";
        p.setAttribute("role", "alert");
        p.dataset.syntaxError = "";
        p.dataset.line = answer.line || "";
        p.dataset.column = answer.column || "";
        p.textContent = answer.error;
      }
      result.appendChild(p);
      drawGutter(answer.ok ? null : answer.line);
      list("variables", answer.variables);
      list("warnings", answer.warnings);
    }

    async function check() {
      const mine = ++sent;
      const body = new FormData(form);
      const response = await fetch("/console/templates/check", {
        method: "POST",
        body: new URLSearchParams(body),
        headers: csrf ? { "X-CSRF-Token": csrf.content } : {},
        credentials: "same-origin",
      });
      if (mine !== sent) return; // a newer check is under way
      if (response.status === 413) { // larger than any template may be: say so
        const refused = await response.json();
        show({ ok: false, error: refused.errors[0].message });
        return;
      }
      if (!response.ok) return;
      show(await response.json());
    }

    function soon() {
      drawGutter(null);
      clearTimeout(timer);
      timer = setTimeout(() => { check().catch(() => {}); }, 300);
    }
    source.addEventListener("input", soon);
    source.addEventListener("scroll", () => { gutter.scrollTop = source.scrollTop; });
    for (const id of ["format", "strict"]) {
      const field = document.getElementById(id);
      if (field) field.addEventListener("change", soon);
    }
  }

  function healthRefresh() {
    const live = document.getElementById("health-live");
    const box = document.getElementById("auto-refresh");
    if (!live || !box) return;
    const seconds = Number(live.dataset.refreshS) || 15;
    async function refresh() {
      if (!box.checked) return;
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const replacement = fresh.getElementById("health-live");
      if (replacement) live.replaceChildren(...replacement.childNodes);
    }
    setInterval(() => { refresh().catch(() => {}); }, seconds * 1000);
  }

  if (page === "reviews") reviewShortcuts();
  if (page === "health") healthRefresh();
  if (page === "studio") studioCheck();
})();
