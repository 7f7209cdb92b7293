// Sign in: a user name and password, answered by a session cookie and a CSRF token.

import { api } from "../api.js";
import { h, replace } from "../dom.js";

export function render({ signedIn }) {
  const message = h("div", { id: "signin-error", "aria-live": "assertive" });
  const user = h("input", { id: "user", name: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "stack", "aria-describedby": "signin-error", onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      const started = await api("/session", { method: "POST", body: { user: user.value, password: password.value } });
      await signedIn(started);
    } catch (err) {
      replace(message, h("p", { class: "error", role: "alert" },
        err.status === 401 ? "Wrong user name or password." : err.message,
        err.status === 429 ? " Wait a moment before trying again." : ""));
      password.select();
      submit.disabled = false;
    }
  } },
  h("label", { for: "user" }, "User"), user,
  h("label", { for: "password" }, "Password"), password,
  submit, message);
  return h("section", { class: "panel signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Stasis"), form);
}
