// Small helpers for the server-rendered pages: test a connection before saving it, show the
// settings of the chosen object, and keep a sync page up to date while a run goes on.
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || '';

  document.querySelectorAll('[data-test-app]').forEach(function (button) {
    button.addEventListener('click', async function () {
      const form = button.closest('form');
      const out = form.querySelector('#test-result');
      out.textContent = 'Testing…';
      out.className = '';
      const resp = await fetch('/apps/test', {
        method: 'POST',
        headers: { 'x-csrf-token': csrf, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(new FormData(form)),
      });
      const result = await resp.json();
      out.textContent = result.message;
      out.className = result.ok ? 'ok' : 'error';
    });
  });

  const object = document.querySelector('select[name="object"]');
  // Only the chosen object's settings are shown and sent (a hidden fieldset is disabled), and
  // the modes offered are that object's (its fieldset lists them).
  function showObject() {
    let modes = [];
    document.querySelectorAll('fieldset[data-object]').forEach(function (f) {
      const chosen = f.dataset.object === object.value;
      f.hidden = !chosen;
      f.disabled = !chosen;
      if (chosen) modes = (f.dataset.modes || '').split(' ').filter(Boolean);
    });
    const mode = document.querySelector('select[name="mode"]');
    if (mode && modes.length) {
      const current = mode.value;
      mode.innerHTML = '';
      modes.forEach(function (m) {
        const o = document.createElement('option');
        o.value = m;
        o.textContent = m;
        o.selected = m === current;
        mode.appendChild(o);
      });
    }
  }
  if (object) { object.addEventListener('change', showObject); showObject(); }

  // A setting shown only for some values of another (`event_name` for track and screen
  // events): hidden and not sent otherwise.
  function showWhen() {
    document.querySelectorAll('label[data-when]').forEach(function (l) {
      const [name, values] = l.dataset.when.split('=');
      const scope = l.closest('fieldset') || document;
      const other = scope.querySelector('[name="' + name + '"]');
      const shown = !other || values.split('|').includes(other.value);
      l.hidden = !shown;
      l.querySelectorAll('input, select').forEach(function (i) { i.disabled = !shown; });
    });
  }
  document.querySelectorAll('fieldset[data-object] select').forEach(function (s) {
    s.addEventListener('change', showWhen);
  });
  showWhen();

  // A new warehouse: only the chosen kind's settings are shown and sent.
  const kind = document.querySelector('#new-warehouse select[name="type"]');
  function showKind() {
    document.querySelectorAll('#new-warehouse fieldset[data-type]').forEach(function (f) {
      const chosen = f.dataset.type === kind.value;
      f.hidden = !chosen;
      f.disabled = !chosen;
    });
  }
  if (kind) { kind.addEventListener('change', showKind); showKind(); }

  const state = document.querySelector('[data-live]');
  if (state) {
    setInterval(async function () {
      const resp = await fetch(state.dataset.live);
      if (!resp.ok) return;
      const live = await resp.json();
      state.textContent = live.state;
      document.getElementById('history').innerHTML = live.history;
    }, 1500);
  }
})();
