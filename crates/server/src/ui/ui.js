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

  // A sync's or a run's page: the state, the history and the live figures of a run going,
  // every second.
  const state = document.querySelector('[data-live]');
  if (state) {
    const progress = document.getElementById('progress');
    setInterval(async function () {
      const resp = await fetch(state.dataset.live);
      if (!resp.ok) return;
      const live = await resp.json();
      state.textContent = live.state;
      const history = document.getElementById('history');
      if (history) history.innerHTML = live.history;
      if (progress) {
        const p = live.progress;
        progress.textContent = p
          ? p.rows_read + ' read · ' + p.rows_sent + ' sent · ' + p.rows_failed + ' failed · ' + p.rows_per_second + ' rows/s · ' + p.seconds + ' s'
          : (live.state === 'running' ? 'running in another worker' : 'not running');
      }
    }, 1000);
  }

  // The schedule: presets fill it in, and the next three run times show before saving.
  const schedule = document.querySelector('input[name="schedule"]');
  if (schedule) {
    const next = document.getElementById('schedule-next');
    async function preview() {
      if (!next) return;
      const resp = await fetch('/schedule/next?spec=' + encodeURIComponent(schedule.value));
      const r = await resp.json();
      next.textContent = r.error ? r.error : r.next.length ? 'Next runs: ' + r.next.join(', ') : 'Manual runs only.';
    }
    document.querySelectorAll('[data-preset]').forEach(function (b) {
      b.addEventListener('click', function () {
        let v = b.dataset.preset;
        if (v === 'daily') {
          const at = (document.querySelector('input[name="daily_at"]') || {}).value || '09:00';
          const [h, m] = at.split(':');
          v = parseInt(m, 10) + ' ' + parseInt(h, 10) + ' * * *';
        }
        schedule.value = v;
        preview();
      });
    });
    schedule.addEventListener('input', preview);
    preview();
  }
})();
