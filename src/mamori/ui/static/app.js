// mamori web UI: the only script besides the vendored htmx (CSP: script-src 'self').
// 1. every htmx request carries the session's CSRF token
// 2. idle-logoff warning and logoff (the server enforces the same limit on its side)
// 3. passkey sign-in and enrolment against /api/v1/auth (WebAuthn JSON helpers)
(function () {
  "use strict";
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });

  // --- idle logoff -------------------------------------------------------------------------
  var idle = parseInt(document.body.getAttribute("data-idle-seconds") || "0", 10);
  var warnAt, outAt, warnTimer, outTimer, tick;
  function restartIdle() {
    if (!idle) return;
    clearTimeout(warnTimer); clearTimeout(outTimer); clearInterval(tick);
    var box = document.getElementById("idle-warning");
    if (box) box.hidden = true;
    var lead = Math.min(60, Math.floor(idle / 2));
    var started = Date.now();
    outAt = started + idle * 1000;
    warnTimer = setTimeout(function () {
      if (!box) return;
      box.hidden = false;
      var left = box.querySelector("[data-idle-left]");
      tick = setInterval(function () {
        var s = Math.max(0, Math.round((outAt - Date.now()) / 1000));
        if (left) left.textContent = "(" + s + ")";
      }, 1000);
      var stay = document.getElementById("idle-stay");
      if (stay) stay.focus();
    }, (idle - lead) * 1000);
    outTimer = setTimeout(function () {
      window.location.assign("/logout/idle");
    }, idle * 1000);
  }
  document.addEventListener("htmx:afterRequest", restartIdle);
  restartIdle();

  // --- keyboard at the desk: ↓/↑ move between search results (Enter opens one) ----------------
  document.addEventListener("keydown", function (e) {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    var here = document.activeElement;
    if (!here || !here.hasAttribute || !here.hasAttribute("data-result")) return;
    var all = Array.prototype.slice.call(document.querySelectorAll("[data-result]"));
    var next = all[all.indexOf(here) + (e.key === "ArrowDown" ? 1 : -1)];
    if (next) { next.focus(); e.preventDefault(); }
  });

  // --- passkeys ------------------------------------------------------------------------------
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function showError(button) {
    var box = button.parentNode.querySelector("[data-passkey-error]");
    if (box) box.hidden = false;
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-passkey]");
    if (!button) return;
    var next = button.getAttribute("data-next") || "/";
    if (button.getAttribute("data-passkey") === "signin") {
      post("/api/v1/auth/webauthn/options").then(function (options) {
        return navigator.credentials.get({
          publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options)
        });
      }).then(function (cred) {
        return post("/api/v1/auth/webauthn", { credential: cred.toJSON() });
      }).then(function () {
        window.location.assign(next);
      }).catch(function () { showError(button); });
    } else {
      post("/api/v1/auth/enrol/webauthn/options").then(function (options) {
        return navigator.credentials.create({
          publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options)
        });
      }).then(function (cred) {
        return post("/api/v1/auth/enrol/webauthn", { credential: cred.toJSON(), label: "browser" });
      }).then(function (out) {
        var codes = document.getElementById("codes");
        var list = codes.querySelector("[data-codes]");
        (out.recovery_codes || []).forEach(function (c) {
          var li = document.createElement("li");
          var code = document.createElement("code");
          code.textContent = c;
          li.appendChild(code);
          list.appendChild(li);
        });
        document.querySelectorAll("#enrol .choices").forEach(function (n) { n.hidden = true; });
        codes.hidden = false;
      }).catch(function () { showError(button); });
    }
  });
})();
