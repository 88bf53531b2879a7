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
  function showObject() {
    document.querySelectorAll('fieldset[data-object]').forEach(function (f) {
      f.hidden = f.dataset.object !== object.value;
    });
    const mode = document.querySelector('select[name="mode"]');
    if (mode) {
      const m = object.value === 'event' ? 'insert' : 'upsert';
      mode.innerHTML = '<option value="' + m + '">' + m + '</option>';
    }
  }
  if (object) { object.addEventListener('change', showObject); showObject(); }

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
