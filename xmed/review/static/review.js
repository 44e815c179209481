// The review page's behaviour: ratings saved as JSON (shown "saved" only once the server has
// committed them), heatmap opacity, flicker between a photograph and its edit (and an edit's
// change), a panel's image laid over the large photograph on a click, the keyboard (a digit
// chooses and goes on to the next unrated question), and test-time intervention. The page's data
// comes from <script type="application/json" id="page-data">.
"use strict";

(function () {
  const dataElement = document.getElementById("page-data");
  const page = dataElement ? JSON.parse(dataElement.textContent) : null;
  let pending = 0;
  const whenIdle = [];

  // POST `body` as JSON; resolves to the server's answer, rejects with its error message.
  function post(url, body) {
    pending += 1;
    return fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", [page.csrf_header]: page.csrf },
      body: JSON.stringify(body),
    }).then(async (response) => {
      const answer = await response.json().catch(() => null);
      if (!response.ok) {
        throw new Error(answer && answer.error ? answer.error : `the server answered ${response.status}`);
      }
      return answer;
    }).finally(() => {
      pending -= 1;
      if (pending === 0) whenIdle.splice(0).forEach((resolve) => resolve());
    });
  }

  function idle() {
    return pending === 0 ? Promise.resolve() : new Promise((resolve) => whenIdle.push(resolve));
  }

  function show(status, state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  // Saves of one control run one after another, so the last choice is the one stored; each
  // resolves to whether the server acknowledged it.
  function saver(url, status) {
    let queue = Promise.resolve();
    return (body) => {
      show(status, "saving", "saving…");
      queue = queue.then(() => post(url, body)).then(
        () => { show(status, "saved", "saved"); return true; },
        (error) => { show(status, "failed", `not saved: ${error.message}`); return false; });
      return queue;
    };
  }

  function setUpRatings() {
    document.querySelectorAll("fieldset.rating").forEach((group) => {
      const field = group.dataset.field;
      const save = saver(group.dataset.url, group.querySelector(".status"));
      let stored = group.querySelector("input[type=radio]:checked");
      let latest = 0;
      group.addEventListener("change", (event) => {
        const chosen = event.target;
        const ticket = ++latest;
        save({ [field]: Number(chosen.value) }).then((saved) => {
          if (saved) stored = chosen;
          if (ticket !== latest) return;
          // show what the server holds, never a choice it did not take
          if (saved) chosen.checked = true; else if (stored) stored.checked = true; else chosen.checked = false;
        });
      });
    });
    const note = document.getElementById("note");
    if (!note) return;
    const save = saver(note.dataset.url, document.getElementById("note-status"));
    let stored = note.value;
    let timer = null;
    const saveNote = () => {
      clearTimeout(timer);
      const text = note.value;
      if (text === stored) return;
      save({ note: text }).then((saved) => { if (saved) stored = text; });
    };
    note.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(saveNote, 1000); });
    note.addEventListener("change", saveNote);
  }

  // The large photograph's layer: the panel image a click chose (null: none).
  const main = { layer: document.getElementById("main-layer"), caption: document.getElementById("main-caption"),
                 shown: null };

  function opacityOf(button) {
    const slider = button.closest(".panel").querySelector("input.opacity");
    return slider ? String(Number(slider.value) / 100) : "1";
  }

  function enlarge(button) {
    if (!main.layer) return;
    if (main.shown) main.shown.setAttribute("aria-pressed", "false");
    if (button === null || button === main.shown) {
      main.shown = null;
      main.layer.hidden = true;
      main.caption.textContent = main.caption.dataset.plain;
      return;
    }
    main.shown = button;
    button.setAttribute("aria-pressed", "true");
    main.layer.src = button.dataset.layer;
    main.layer.alt = button.dataset.caption;
    main.layer.style.opacity = button.dataset.heatmap ? opacityOf(button) : "1";
    main.layer.hidden = false;
    main.caption.textContent = `Shown over the photograph: ${button.dataset.caption}. Click it again or press Esc to take it off.`;
  }

  function setUpImages() {
    document.querySelectorAll(".panel").forEach((panel) => {
      const slider = panel.querySelector("input.opacity");
      const heatmap = panel.querySelector("img.heatmap");
      if (!slider || !heatmap) return;
      const apply = () => {
        heatmap.style.opacity = String(Number(slider.value) / 100);
        if (main.shown && panel.contains(main.shown)) main.layer.style.opacity = heatmap.style.opacity;
      };
      slider.addEventListener("input", apply);
      apply();
    });
    document.querySelectorAll("button.enlarge").forEach((button) => {
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => enlarge(button));
    });
    document.querySelectorAll(".flicker-toggle").forEach((button) => {
      button.addEventListener("click", () => flicker(button.closest(".edit-column").querySelector(".flicker")));
    });
  }

  function flicker(stack, original) {
    const showOriginal = original === undefined ? !stack.classList.contains("show-original") : original;
    stack.classList.toggle("show-original", showOriginal);
    stack.closest(".edit-column").querySelector(".flicker-toggle").textContent = showOriginal
      ? "Show the edit (f)" : "Show the original (f)";
  }

  function flickerAll() {
    const stacks = Array.from(document.querySelectorAll(".flicker"));
    const showOriginal = stacks.some((stack) => !stack.classList.contains("show-original"));
    stacks.forEach((stack) => flicker(stack, showOriginal));
  }

  // Each edit in its place, or what it changed (its amplified difference map).
  function changesAll() {
    const stacks = Array.from(document.querySelectorAll(".flicker"));
    const showChange = stacks.some((stack) => !stack.classList.contains("show-change"));
    stacks.forEach((stack) => {
      stack.classList.toggle("show-change", showChange);
      if (showChange) flicker(stack, false);
    });
  }

  function go(url) {
    if (url) idle().then(() => { window.location.assign(url); });
  }

  // The questions still open to rating (a locked study disables them all), in page order.
  function questions() {
    return Array.from(document.querySelectorAll("fieldset.rating")).filter((group) => !group.disabled);
  }

  function answered(group) {
    return group.querySelector("input[type=radio]:checked") !== null;
  }

  // The first unanswered question after `from` (an element; null: the page's start), wrapping round;
  // never the question holding `from`.
  function nextUnrated(from) {
    const open = questions().filter((group) => !answered(group) && !(from && group.contains(from)));
    const follows = (group) => from && (from.compareDocumentPosition(group) & Node.DOCUMENT_POSITION_FOLLOWING);
    return open.find(follows) || open[0] || null;
  }

  // Put the focus where the keyboard enters a question: on its choice, else on its first option.
  function enter(group) {
    (group.querySelector("input[type=radio]:checked") || group.querySelector("input[type=radio]")).focus();
  }

  // Choose `option` (its change event saves it) with the focus on it, then go on to the next
  // unrated question; with none left the focus stays on the choice, so an arrow key moves from it.
  function choose(option) {
    if (!option.checked) option.click();
    option.focus();
    const next = nextUnrated(option);
    if (next) enter(next);
  }

  function keyInQuestion(event, option) {
    if (/^[0-9]$/.test(event.key)) {
      const chosen = option.closest("fieldset").querySelector(`input[type=radio][value="${event.key}"]`);
      if (chosen) choose(chosen);
    } else if (event.key === "Enter" || event.key === " ") {
      choose(option);
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  function setUpKeys() {
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const target = event.target;
      if (target.matches("textarea, select, input[type=text], input[type=number]")) {
        if (event.key === "Escape") target.blur();
        return;
      }
      if (event.key === "Escape") { enlarge(null); return; }
      const inRadio = target.matches("input[type=radio]");
      if (inRadio && keyInQuestion(event, target)) return;
      const arrow = event.key === "ArrowLeft" || event.key === "ArrowRight";
      if (arrow && target.matches("input[type=radio], input[type=range]")) return;  // they move the choice
      if (event.key === "u") {
        const next = nextUnrated(target === document.body ? null : target);
        if (next) enter(next);
      } else if (event.key === "U") go(page.next_unrated);
      else if (event.key === "ArrowLeft" || event.key === "p") go(page.previous);
      else if (event.key === "ArrowRight" || event.key === "n") go(page.next);
      else if (event.key === "f") flickerAll();
      else if (event.key === "d") changesAll();
      else return;
      event.preventDefault();
    });
  }

  // Arriving by "next unrated case" (the URL ends in #rate): the focus goes to its first unrated question.
  function focusOnArrival() {
    if (window.location.hash !== "#rate") return;
    history.replaceState(null, "", window.location.pathname);
    const next = nextUnrated(null);
    if (next) enter(next);
  }

  function setUpIntervention() {
    const box = document.getElementById("intervention");
    if (!box || !page.intervene_url) return;
    const result = document.getElementById("intervened");
    const controls = Array.from(box.querySelectorAll("[data-concept]"));
    const values = () => {
      const chosen = {};
      controls.forEach((control) => {
        if (control.type === "range" ? control.dataset.touched === "1" : control.value !== "") {
          chosen[control.dataset.concept] = Number(control.value);
        }
      });
      return chosen;
    };
    const update = () => {
      const chosen = values();
      if (Object.keys(chosen).length === 0) { result.textContent = "unchanged"; return; }
      result.textContent = "…";
      post(page.intervene_url, { case: page.n, values: chosen }).then(
        (answer) => { result.textContent = `${answer.probability.toFixed(2)}, ${answer.decision}`; },
        (error) => { result.textContent = `not computed: ${error.message}`; });
    };
    controls.forEach((control) => {
      if (control.type === "range") {
        const shown = control.parentElement.querySelector(".concept-value");
        control.addEventListener("input", () => {
          control.dataset.touched = "1";
          shown.textContent = Number(control.value).toFixed(2);
        });
        control.parentElement.querySelector(".reset").addEventListener("click", () => {
          control.value = control.dataset.predicted;
          control.dataset.touched = "0";
          shown.textContent = "as predicted";
          update();
        });
      }
      control.addEventListener("change", update);
    });
  }

  window.addEventListener("beforeunload", (event) => {
    if (pending > 0) { event.preventDefault(); event.returnValue = ""; }
  });

  if (page) {
    setUpRatings();
    setUpImages();
    setUpKeys();
    setUpIntervention();
    focusOnArrival();
  }
})();
