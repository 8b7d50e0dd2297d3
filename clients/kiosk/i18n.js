// Every string the visitor sees, one table per language. German first.
// {n}, {message} are filled in by t(key, values).

export const STRINGS = {
  de: {
    title: "Male deine Welt von morgen",
    switchLanguage: "English",
    switchLanguageLabel: "Switch to English",
    mapRegion: "Karte",
    canvasLabel: "Zeichenfläche: male mit dem Finger, wo sich etwas ändern soll. " +
      "Mit den Pfeiltasten bewegen, Leertaste malt.",
    toolsLabel: "Werkzeuge",
    brush: "Pinsel",
    eraser: "Radierer",
    sizeLabel: "Pinselgröße",
    sizeSmall: "klein",
    sizeMedium: "mittel",
    sizeLarge: "groß",
    undo: "Zurück",
    clear: "Alles löschen",
    wishLabel: "Was soll hier entstehen?",
    wishPlaceholder: "Dein Wunsch …",
    examplesLabel: "Beispiele zum Antippen",
    examples: [
      "Hier soll ein Windpark entstehen",
      "Mehr Grünflächen statt Beton",
      "Ein See zum Baden",
      "Ein Wald statt Häuser",
      "Solaranlagen auf allen Dächern",
      "Ein Park mit Spielplatz",
    ],
    hint: "Male auf der Karte, wo sich etwas ändern soll, und schreibe deinen Wunsch.",
    submit: "Zukunft malen",
    cancel: "Abbrechen",
    progressLabel: "Fortschritt",
    sending: "Dein Wunsch wird gesendet …",
    queuedNoCount: "Gleich geht es los …",
    loading: "Die KI macht sich bereit …",
    painting: "Die KI malt deine Zukunft … {n} %",
    finishing: "Fast fertig …",
    fetching: "Das Bild wird geladen …",
    before: "Vorher",
    after: "Nachher",
    sliderLabel: "Vorher und Nachher vergleichen",
    again: "Noch eine Version",
    edit: "Weiter malen",
    reset: "Neu anfangen",
    retry: "Nochmal versuchen",
    dismiss: "OK",
    attractKicker: "Alternativweltgeschichten",
    attractTitle: "Wie soll deine Welt aussehen?",
    attract: "Tippe, um zu beginnen",
    attractLabel: "Tippe, um zu beginnen",
    needPaint: "Male zuerst auf der Karte, wo sich etwas ändern soll.",
    needWish: "Schreibe zuerst deinen Wunsch – oder tippe auf ein Beispiel.",
    busy: "Gerade ist viel los. Wir versuchen es in {n} Sekunden von selbst noch einmal …",
    tooLarge: "Das Bild ist zu groß für den Server. ({message})",
    invalid: "Das hat leider nicht geklappt: Der Server konnte den Wunsch so nicht annehmen. " +
      "Ändere die Markierung oder den Text und versuche es noch einmal. ({message})",
    network: "Keine Verbindung zum Server. Bitte versuche es noch einmal.",
    failed: "Beim Malen ist etwas schiefgegangen. Bitte versuche es noch einmal. ({message})",
    timeout: "Das dauert zu lange. Bitte versuche es noch einmal.",
    cancelled: "Abgebrochen. Du kannst weiter malen.",
    server: "Der Server hat ein Problem ({message}). Bitte versuche es gleich noch einmal.",
    mapMissing: "Die Karte konnte nicht geladen werden.",
  },
  en: {
    title: "Paint your world of tomorrow",
    switchLanguage: "Deutsch",
    switchLanguageLabel: "Auf Deutsch umschalten",
    mapRegion: "Map",
    canvasLabel: "Drawing area: paint with your finger where something should change. " +
      "Move with the arrow keys, space paints.",
    toolsLabel: "Tools",
    brush: "Brush",
    eraser: "Eraser",
    sizeLabel: "Brush size",
    sizeSmall: "small",
    sizeMedium: "medium",
    sizeLarge: "large",
    undo: "Undo",
    clear: "Clear all",
    wishLabel: "What should be here?",
    wishPlaceholder: "Your wish …",
    examplesLabel: "Examples to tap",
    examples: [
      "Build a wind farm here",
      "More green spaces instead of concrete",
      "A lake for swimming",
      "A forest instead of houses",
      "Solar panels on every roof",
      "A park with a playground",
    ],
    hint: "Paint on the map where something should change, and write your wish.",
    submit: "Paint the future",
    cancel: "Cancel",
    progressLabel: "Progress",
    sending: "Sending your wish …",
    queuedNoCount: "Starting soon …",
    loading: "The AI is getting ready …",
    painting: "The AI is painting your future … {n} %",
    finishing: "Almost done …",
    fetching: "Loading the picture …",
    before: "Before",
    after: "After",
    sliderLabel: "Compare before and after",
    again: "Another version",
    edit: "Keep painting",
    reset: "Start over",
    retry: "Try again",
    dismiss: "OK",
    attractKicker: "Alternative world stories",
    attractTitle: "What should your world look like?",
    attract: "Tap to begin",
    attractLabel: "Tap to begin",
    needPaint: "First paint on the map where something should change.",
    needWish: "First write your wish – or tap an example.",
    busy: "It is busy right now. We will try again by ourselves in {n} seconds …",
    tooLarge: "The picture is too large for the server. ({message})",
    invalid: "Sorry, that did not work: the server could not accept the wish like this. " +
      "Change the painted area or the text and try again. ({message})",
    network: "No connection to the server. Please try again.",
    failed: "Something went wrong while painting. Please try again. ({message})",
    timeout: "This is taking too long. Please try again.",
    cancelled: "Cancelled. You can keep painting.",
    server: "The server has a problem ({message}). Please try again in a moment.",
    mapMissing: "The map could not be loaded.",
  },
};

let current = "de";

export function setLanguage(lang) {
  current = STRINGS[lang] ? lang : "de";
  document.documentElement.lang = current;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of document.querySelectorAll("[data-i18n-aria]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAria));
  }
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  }
  return current;
}

export function language() {
  return current;
}

export function t(key, values = {}) {
  const text = STRINGS[current][key] ?? STRINGS.de[key] ?? key;
  if (typeof text !== "string") return text;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}
