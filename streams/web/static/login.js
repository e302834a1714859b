// Sign-in: POST api/login (JSON), then go to the console. Errors are shown, never alerted.
const form = document.getElementById("login-form");
const err = document.getElementById("login-error");
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.textContent = "";
  const btn = document.getElementById("login-btn");
  btn.disabled = true;
  try {
    const r = await fetch("api/login", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: form.username.value.trim(), password: form.password.value}),
    });
    if (r.ok) { window.location.replace("./"); return; }
    const body = await r.json().catch(() => ({}));
    err.textContent = r.status === 429
      ? `尝试次数过多，请稍后再试 Too many attempts — ${body.detail || ""}`
      : r.status === 401 ? "用户名或密码错误 Wrong user name or password"
      : `登录失败 Sign-in failed (${r.status})`;
  } catch (e) {
    err.textContent = "无法连接服务器 Cannot reach the server";
  } finally {
    btn.disabled = false;
  }
});
