"""Generate ``tickets.csv``: ~400 helpdesk tickets written for this project (English, German, French).

Every sentence below was written for helpdesk-connector; the generator combines
them with a fixed seed into varied tickets (subject, body, queue, priority).
Queue follows from what the ticket is about; priority from how urgent the
sender says it is and how many people are affected.  Re-running it gives the
same file:

    .venv/bin/python -m connector.sample_data.generate
    .venv/bin/python -m connector.sample_data.generate --text /tmp/tickets_text.csv   # text,queue,priority

The second form writes the same tickets with a single ``text`` column; load it
with ``--text-column text``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "tickets.csv"
SEED = 20261128
COUNT = 420

NAMES = ["Anna", "Jonas", "Claire", "Mehmet", "Sofia", "Luca", "Marie", "Pieter", "Elena", "Tom", "Lea", "Karim",
         "Julia", "Hugo", "Nina", "Felix", "Chloé", "Oskar", "Inès", "David"]

# --------------------------------------------------------------------------- topics per queue and language
# Each entry: (subject, body sentence).  {x} slots are filled from the lists in SLOTS.

TOPICS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "Hardware": {
        "en": [
            ("{device} does not start", "My {device} does not start any more, the power light blinks twice and then nothing happens."),
            ("Broken screen on {device}", "The screen of my {device} has a crack across the middle and half of it stays black."),
            ("Printer on floor {floor} jams", "The printer on floor {floor} jams on every second page and shows paper error E{num}."),
            ("Docking station not detected", "When I connect my laptop to the docking station the external monitors stay dark and the USB ports do not work."),
            ("Keyboard keys stuck", "Several keys on my keyboard are stuck since coffee was spilled on it this morning."),
            ("Need a replacement battery", "The battery of my {device} only lasts about twenty minutes and the laptop gets very hot."),
            ("Headset microphone not working", "Nobody can hear me in calls, the microphone of my headset is not recognised by the laptop."),
            ("New monitor request", "Could I get a second monitor for my desk in room {room}? The current one flickers constantly."),
        ],
        "de": [
            ("{device_de} startet nicht", "Mein {device_de} startet nicht mehr, die Betriebsanzeige blinkt kurz und dann passiert nichts."),
            ("Drucker im {floor}. Stock defekt", "Der Drucker im {floor}. Stock zieht kein Papier mehr ein und zeigt Fehler E{num}."),
            ("Bildschirm flackert", "Der Monitor an meinem Arbeitsplatz in Raum {room} flackert ständig und wird manchmal ganz schwarz."),
            ("Dockingstation erkennt Laptop nicht", "Wenn ich den Laptop an die Dockingstation anschließe, bleiben beide Bildschirme dunkel."),
            ("Tastatur defekt", "Mehrere Tasten meiner Tastatur reagieren nicht mehr, besonders die Leertaste klemmt."),
            ("Akku hält nicht mehr", "Der Akku meines {device_de} hält nur noch eine halbe Stunde und das Gerät wird sehr heiß."),
            ("Headset wird nicht erkannt", "Mein Headset wird vom Laptop nicht erkannt, in Besprechungen hört mich niemand."),
        ],
        "fr": [
            ("Mon {device_fr} ne démarre plus", "Mon {device_fr} ne démarre plus, le voyant clignote puis plus rien ne se passe."),
            ("Imprimante bloquée au {floor}e étage", "L'imprimante du {floor}e étage bourre à chaque impression et affiche l'erreur E{num}."),
            ("Écran cassé", "L'écran de mon {device_fr} est fissuré et la moitié de l'affichage reste noire."),
            ("Station d'accueil ne fonctionne pas", "Quand je branche mon portable sur la station d'accueil, les deux écrans restent noirs."),
            ("Clavier défectueux", "Plusieurs touches de mon clavier ne répondent plus depuis ce matin."),
            ("Batterie à remplacer", "La batterie de mon {device_fr} ne tient plus que vingt minutes et il chauffe beaucoup."),
            ("Casque non reconnu", "Mon casque n'est pas reconnu par l'ordinateur, personne ne m'entend pendant les réunions."),
        ],
    },
    "Software": {
        "en": [
            ("{app} crashes on start", "{app} crashes right after the splash screen since this morning's update."),
            ("Please install {app}", "Could you please install {app} on my laptop? I need it for the new project."),
            ("{app} very slow", "{app} takes several minutes to open a file and freezes when I save."),
            ("Error message in {app}", "When I open a shared document in {app} I get the message 'file is locked by another user' although nobody has it open."),
            ("Update fails", "The software update keeps failing with error 0x{hex} and asks me to restart every hour."),
            ("Outlook add-in missing", "The meeting add-in disappeared from my mail client and I cannot schedule online meetings any more."),
            ("License expired for {app}", "{app} says my licence has expired and opens only in read-only mode."),
            ("Macros disabled in spreadsheet", "The macros in our planning spreadsheet are blocked and the report buttons do nothing."),
        ],
        "de": [
            ("{app} stürzt ab", "{app} stürzt seit dem Update heute Morgen direkt nach dem Start ab."),
            ("Bitte {app} installieren", "Könnt ihr bitte {app} auf meinem Laptop installieren? Ich brauche es für das neue Projekt."),
            ("{app} extrem langsam", "{app} braucht mehrere Minuten, um eine Datei zu öffnen, und friert beim Speichern ein."),
            ("Fehlermeldung beim Öffnen", "Beim Öffnen einer freigegebenen Datei in {app} kommt die Meldung, dass sie gesperrt ist."),
            ("Update schlägt fehl", "Das Software-Update bricht immer mit Fehler 0x{hex} ab und verlangt ständig einen Neustart."),
            ("Lizenz abgelaufen", "{app} meldet, dass meine Lizenz abgelaufen ist, und öffnet alles nur schreibgeschützt."),
            ("Add-in im Mailprogramm fehlt", "Das Besprechungs-Add-in ist aus meinem Mailprogramm verschwunden."),
        ],
        "fr": [
            ("{app} plante au démarrage", "{app} plante juste après l'écran de démarrage depuis la mise à jour de ce matin."),
            ("Installation de {app}", "Pourriez-vous installer {app} sur mon portable ? J'en ai besoin pour le nouveau projet."),
            ("{app} très lent", "{app} met plusieurs minutes à ouvrir un fichier et se fige à l'enregistrement."),
            ("Message d'erreur dans {app}", "En ouvrant un document partagé dans {app}, j'ai le message « fichier verrouillé par un autre utilisateur »."),
            ("Échec de la mise à jour", "La mise à jour échoue avec l'erreur 0x{hex} et demande un redémarrage toutes les heures."),
            ("Licence expirée", "{app} indique que ma licence a expiré et ne s'ouvre plus qu'en lecture seule."),
        ],
    },
    "Access": {
        "en": [
            ("Password reset needed", "I locked myself out after too many attempts and need my password reset."),
            ("Access to {share} folder", "Please give me read and write access to the {share} folder on the file server."),
            ("Account locked", "My account was locked this morning and I cannot log in to Windows or my mailbox."),
            ("New employee account", "{name} starts on Monday in our team and needs an account, a mailbox and access to {app}."),
            ("MFA device lost", "I lost the phone with my authenticator app and can no longer confirm sign-ins."),
            ("Remove access for leaver", "{name} left the company last Friday, please disable the account and remove all group memberships."),
            ("Permission denied in {app}", "I get 'permission denied' when I try to open the customer records in {app}."),
            ("Shared mailbox access", "Could you add me to the shared mailbox of the {share} team?"),
        ],
        "de": [
            ("Passwort zurücksetzen", "Ich habe mich nach mehreren Fehlversuchen ausgesperrt und brauche ein neues Passwort."),
            ("Zugriff auf Ordner {share}", "Bitte gebt mir Lese- und Schreibrechte auf den Ordner {share} auf dem Dateiserver."),
            ("Konto gesperrt", "Mein Konto ist seit heute Morgen gesperrt, ich komme weder in Windows noch ins Postfach."),
            ("Konto für neue Kollegin", "{name} fängt am Montag bei uns an und braucht ein Konto, ein Postfach und Zugriff auf {app}."),
            ("Authenticator-Handy verloren", "Ich habe mein Handy mit der Authenticator-App verloren und kann Anmeldungen nicht mehr bestätigen."),
            ("Zugriff verweigert", "In {app} bekomme ich beim Öffnen der Kundendaten die Meldung 'Zugriff verweigert'."),
        ],
        "fr": [
            ("Réinitialisation du mot de passe", "Mon compte est bloqué après trop de tentatives, j'ai besoin d'un nouveau mot de passe."),
            ("Accès au dossier {share}", "Merci de me donner les droits de lecture et d'écriture sur le dossier {share} du serveur de fichiers."),
            ("Compte verrouillé", "Mon compte est verrouillé depuis ce matin, impossible d'ouvrir une session ou ma messagerie."),
            ("Compte pour un nouvel arrivant", "{name} arrive lundi dans l'équipe et a besoin d'un compte, d'une boîte mail et d'un accès à {app}."),
            ("Téléphone d'authentification perdu", "J'ai perdu le téléphone avec l'application d'authentification et je ne peux plus valider mes connexions."),
            ("Accès refusé", "J'obtiens « accès refusé » en ouvrant les fiches clients dans {app}."),
        ],
    },
    "Network": {
        "en": [
            ("VPN keeps disconnecting", "The VPN connection drops every few minutes when I work from home."),
            ("No Wi-Fi in meeting room {room}", "There is no Wi-Fi signal at all in meeting room {room}, guests cannot connect either."),
            ("Internet very slow", "Web pages take ages to load and video calls freeze for everyone on floor {floor}."),
            ("Cannot reach file server", "Since this morning the network drive cannot be reached, Windows says the path was not found."),
            ("Network port dead", "The network socket at my desk in room {room} does not work, the cable light stays off."),
            ("Website blocked by proxy", "The proxy blocks the supplier portal we need for ordering, it shows 'category not allowed'."),
            ("DNS errors", "Internal addresses do not resolve, I only get 'server not found' for the intranet."),
        ],
        "de": [
            ("VPN bricht ständig ab", "Die VPN-Verbindung bricht im Homeoffice alle paar Minuten ab."),
            ("Kein WLAN in Raum {room}", "Im Besprechungsraum {room} gibt es überhaupt kein WLAN, auch Gäste kommen nicht ins Netz."),
            ("Internet sehr langsam", "Webseiten laden ewig und Videokonferenzen frieren im {floor}. Stock bei allen ein."),
            ("Netzlaufwerk nicht erreichbar", "Seit heute früh ist das Netzlaufwerk nicht erreichbar, Windows findet den Pfad nicht."),
            ("Netzwerkdose ohne Funktion", "Die Netzwerkdose an meinem Platz in Raum {room} funktioniert nicht, am Kabel leuchtet nichts."),
            ("Proxy blockiert Webseite", "Der Proxy blockiert das Lieferantenportal, das wir für Bestellungen brauchen."),
        ],
        "fr": [
            ("Le VPN se déconnecte", "La connexion VPN se coupe toutes les quelques minutes en télétravail."),
            ("Pas de Wi-Fi en salle {room}", "Il n'y a aucun signal Wi-Fi dans la salle de réunion {room}, les invités ne peuvent pas se connecter."),
            ("Internet très lent", "Les pages web mettent une éternité à charger et les visioconférences se figent au {floor}e étage."),
            ("Lecteur réseau inaccessible", "Depuis ce matin le lecteur réseau est inaccessible, Windows ne trouve pas le chemin."),
            ("Prise réseau morte", "La prise réseau de mon bureau en salle {room} ne fonctionne pas."),
            ("Site bloqué par le proxy", "Le proxy bloque le portail fournisseur dont nous avons besoin pour commander."),
        ],
    },
    "HR": {
        "en": [
            ("Question about my payslip", "My payslip for {month} shows fewer overtime hours than I recorded."),
            ("Holiday request not visible", "I submitted a holiday request for {month} but my manager cannot see it in the portal."),
            ("Change of address", "I moved last month and need to update my home address for payroll and tax documents."),
            ("Parental leave", "I would like to know how to apply for parental leave starting in {month}."),
            ("Employment certificate", "Could HR please send me an employment certificate for my landlord?"),
            ("Sick note submission", "Where do I send my doctor's note? I was ill from Monday to Wednesday."),
            ("Training budget", "Is there still training budget this year for a course on project management?"),
        ],
        "de": [
            ("Frage zur Gehaltsabrechnung", "Auf meiner Gehaltsabrechnung für {month_de} fehlen mehrere Überstunden."),
            ("Urlaubsantrag nicht sichtbar", "Ich habe Urlaub für {month_de} beantragt, aber meine Vorgesetzte sieht den Antrag nicht."),
            ("Adressänderung", "Ich bin umgezogen und muss meine Adresse für die Lohnabrechnung ändern."),
            ("Elternzeit beantragen", "Wie beantrage ich Elternzeit ab {month_de}?"),
            ("Arbeitsbescheinigung", "Könnte die Personalabteilung mir bitte eine Arbeitsbescheinigung ausstellen?"),
            ("Krankmeldung", "Wohin schicke ich meine Krankmeldung? Ich war von Montag bis Mittwoch krank."),
        ],
        "fr": [
            ("Question sur ma fiche de paie", "Ma fiche de paie de {month_fr} indique moins d'heures supplémentaires que prévu."),
            ("Demande de congés invisible", "J'ai posé des congés pour {month_fr} mais ma responsable ne voit pas la demande."),
            ("Changement d'adresse", "J'ai déménagé et je dois mettre à jour mon adresse pour la paie."),
            ("Congé parental", "Comment faire une demande de congé parental à partir de {month_fr} ?"),
            ("Attestation employeur", "Les RH pourraient-elles m'envoyer une attestation employeur pour mon propriétaire ?"),
            ("Arrêt maladie", "À qui dois-je envoyer mon arrêt maladie ? J'étais malade de lundi à mercredi."),
        ],
    },
    "Billing": {
        "en": [
            ("Invoice {inv} incorrect", "Invoice {inv} charges us for {num} licences, but we only ordered {num2}."),
            ("Duplicate payment", "We paid invoice {inv} twice by mistake, please refund the second payment."),
            ("Purchase order needed", "The supplier asks for a purchase order number before they deliver the new laptops."),
            ("Credit note request", "Please issue a credit note for the returned monitors on invoice {inv}."),
            ("Change billing address", "Our billing address changed, future invoices must go to the new finance office."),
            ("Reminder for paid invoice", "We received a payment reminder for invoice {inv} although it was paid on the 3rd."),
            ("VAT missing on invoice", "Invoice {inv} has no VAT number, our accounting cannot book it."),
        ],
        "de": [
            ("Rechnung {inv} fehlerhaft", "Auf Rechnung {inv} werden {num} Lizenzen berechnet, bestellt haben wir nur {num2}."),
            ("Doppelte Zahlung", "Wir haben Rechnung {inv} versehentlich doppelt bezahlt, bitte die zweite Zahlung erstatten."),
            ("Bestellnummer benötigt", "Der Lieferant verlangt eine Bestellnummer, bevor er die neuen Laptops liefert."),
            ("Gutschrift anfordern", "Bitte stellt eine Gutschrift für die zurückgeschickten Monitore auf Rechnung {inv} aus."),
            ("Mahnung trotz Zahlung", "Wir haben eine Mahnung für Rechnung {inv} bekommen, obwohl sie am 3. bezahlt wurde."),
            ("Rechnungsadresse ändern", "Unsere Rechnungsadresse hat sich geändert, künftige Rechnungen bitte an die neue Buchhaltung."),
        ],
        "fr": [
            ("Facture {inv} erronée", "La facture {inv} compte {num} licences alors que nous n'en avons commandé que {num2}."),
            ("Paiement en double", "Nous avons payé deux fois la facture {inv}, merci de rembourser le second paiement."),
            ("Bon de commande nécessaire", "Le fournisseur demande un numéro de bon de commande avant de livrer les portables."),
            ("Demande d'avoir", "Merci d'établir un avoir pour les écrans retournés sur la facture {inv}."),
            ("Relance pour une facture payée", "Nous avons reçu une relance pour la facture {inv} alors qu'elle a été payée le 3."),
            ("Changement d'adresse de facturation", "Notre adresse de facturation a changé, les prochaines factures doivent aller au nouveau service comptable."),
        ],
    },
}

SLOTS: dict[str, list[str]] = {
    "device": ["laptop", "desktop PC", "tablet", "workstation", "notebook"],
    "device_de": ["Laptop", "Rechner", "Tablet", "Notebook", "PC"],
    "device_fr": ["portable", "ordinateur", "PC fixe", "poste de travail", "ordinateur portable"],
    "app": ["Excel", "the ERP client", "SAP GUI", "Teams", "the CRM", "Acrobat", "AutoCAD", "the accounting tool", "Word"],
    "share": ["Finance", "Marketing", "Projects", "Sales", "Legal", "Controlling"],
    "month": ["January", "March", "May", "July", "September", "November"],
    "month_de": ["Januar", "März", "Mai", "Juli", "September", "November"],
    "month_fr": ["janvier", "mars", "mai", "juillet", "septembre", "novembre"],
    "floor": ["1", "2", "3", "4", "5"],
    "room": ["A104", "B2.11", "C305", "2.14", "E017", "3.02"],
    "num": ["12", "25", "40", "50", "8"],
    "num2": ["10", "20", "30", "5", "6"],
    "hex": ["80070005", "8024402F", "80240017", "800F0922"],
    "inv": ["INV-2024-0113", "RE-55821", "F-2024-778", "INV-88410", "RE-60233", "F-91204"],
}

# --------------------------------------------------------------------------- priority cues

URGENCY: dict[str, dict[str, list[str]]] = {
    "high": {
        "en": ["This is urgent: the whole team is blocked and cannot work.", "Urgent please, we have a customer deadline today.",
               "Production is affected, twenty people cannot work right now.", "Critical: I have a board presentation in one hour.",
               "ASAP please, this blocks the month-end closing."],
        "de": ["Dringend: das ganze Team ist blockiert und kann nicht arbeiten.", "Bitte dringend, wir haben heute eine Kundenfrist.",
               "Die Produktion steht, zwanzig Leute können gerade nicht arbeiten.", "Kritisch: ich habe in einer Stunde eine Präsentation vor der Geschäftsleitung."],
        "fr": ["Urgent : toute l'équipe est bloquée et ne peut pas travailler.", "C'est urgent, nous avons une échéance client aujourd'hui.",
               "La production est arrêtée, vingt personnes ne peuvent pas travailler.", "Bloquant : j'ai une présentation à la direction dans une heure."],
    },
    "normal": {
        "en": ["Could you have a look today or tomorrow?", "I can work around it for now, but it is annoying.",
               "Please let me know when someone can take a look.", ""],
        "de": ["Könnt ihr euch das heute oder morgen ansehen?", "Ich kann vorerst drumherum arbeiten, aber es stört.",
               "Gebt mir bitte Bescheid, wann sich jemand darum kümmern kann.", ""],
        "fr": ["Pourriez-vous regarder aujourd'hui ou demain ?", "Je peux contourner le problème pour l'instant, mais c'est gênant.",
               "Merci de me dire quand quelqu'un pourra s'en occuper.", ""],
    },
    "low": {
        "en": ["No rush, whenever you have time next week.", "Low priority, it is just a small inconvenience.",
               "Not urgent at all, I am on holiday until the end of the month anyway.", "Whenever convenient, nothing is blocked."],
        "de": ["Keine Eile, gerne irgendwann nächste Woche.", "Niedrige Priorität, es ist nur eine Kleinigkeit.",
               "Gar nicht dringend, ich bin ohnehin bis Monatsende im Urlaub.", "Wenn es passt, es ist nichts blockiert."],
        "fr": ["Rien d'urgent, quand vous aurez le temps la semaine prochaine.", "Priorité basse, ce n'est qu'un petit désagrément.",
               "Pas urgent du tout, je suis en congé jusqu'à la fin du mois.", "Quand cela vous arrange, rien n'est bloqué."],
    },
}
HIGH_SUBJECT_PREFIX = {"en": ["URGENT: ", "Urgent - ", ""], "de": ["DRINGEND: ", "Dringend - ", ""], "fr": ["URGENT : ", "Urgent - ", ""]}

GREETINGS = {"en": ["Hello,", "Hi team,", "Dear IT support,", "Good morning,", ""],
             "de": ["Hallo,", "Hallo zusammen,", "Liebes IT-Team,", "Guten Morgen,", ""],
             "fr": ["Bonjour,", "Bonjour à tous,", "Chère équipe support,", ""]}
EXTRAS = {"en": ["I already restarted twice.", "It worked fine yesterday.", "A colleague has the same problem.",
                 "I attached a screenshot.", "My phone extension is 4{num}."],
          "de": ["Ich habe schon zweimal neu gestartet.", "Gestern ging es noch.", "Eine Kollegin hat das gleiche Problem.",
                 "Ein Screenshot ist angehängt.", "Meine Durchwahl ist 4{num}."],
          "fr": ["J'ai déjà redémarré deux fois.", "Cela fonctionnait hier.", "Un collègue a le même problème.",
                 "Une capture d'écran est jointe.", "Mon poste est le 4{num}."]}
CLOSINGS = {"en": ["Thanks,\n{name}", "Best regards,\n{name}", "Kind regards\n{name}", "Thank you!\n{name}"],
            "de": ["Danke,\n{name}", "Viele Grüße,\n{name}", "Mit freundlichen Grüßen\n{name}", "Danke euch!\n{name}"],
            "fr": ["Merci,\n{name}", "Cordialement,\n{name}", "Bien à vous,\n{name}", "Merci d'avance\n{name}"]}


def _fill(text: str, rng: random.Random) -> str:
    while "{" in text:
        start = text.index("{")
        end = text.index("}", start)
        key = text[start + 1 : end]
        value = rng.choice(NAMES) if key == "name" else rng.choice(SLOTS[key])
        text = text[:start] + value + text[end + 1 :]
    return text


def make_ticket(rng: random.Random, queue: str, lang: str, priority: str) -> dict[str, str]:
    subject, sentence = rng.choice(TOPICS[queue][lang])
    parts = [rng.choice(GREETINGS[lang]), sentence]
    if rng.random() < 0.5:
        parts.append(rng.choice(EXTRAS[lang]))
    cue = rng.choice(URGENCY[priority][lang])
    if cue:
        parts.append(cue)
    body = "\n\n".join(p for p in parts if p) + "\n\n" + rng.choice(CLOSINGS[lang])
    if priority == "high":
        subject = rng.choice(HIGH_SUBJECT_PREFIX[lang]) + subject
    # one slot draw for subject + body keeps e.g. the same app name in both
    seed = rng.random()
    return {
        "subject": _fill(subject, random.Random(seed)),
        "body": _fill(body, random.Random(seed)),
        "queue": queue,
        "priority": priority,
    }


def generate(count: int = COUNT, seed: int = SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    queues = list(TOPICS)
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    attempts = 0
    while len(rows) < count and attempts < count * 50:
        attempts += 1
        queue = queues[len(rows) % len(queues)]
        lang = rng.choices(["en", "de", "fr"], weights=[0.5, 0.25, 0.25])[0]
        priority = rng.choices(["low", "normal", "high"], weights=[0.25, 0.5, 0.25])[0]
        ticket = make_ticket(rng, queue, lang, priority)
        key = (ticket["subject"], ticket["body"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(ticket)
    rng.shuffle(rows)
    return rows


def write_text_variant(path: Path, source: Path = OUT) -> Path:
    """The same tickets with one ``text`` column (subject, blank line, body): ``text,queue,priority``."""
    with source.open(encoding="utf-8", newline="") as src, path.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=["text", "queue", "priority"])
        writer.writeheader()
        for row in csv.DictReader(src):
            writer.writerow({"text": f"{row['subject']}\n\n{row['body']}", "queue": row["queue"], "priority": row["priority"]})
    return path


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "--text":
        target = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT.with_name("tickets_text.csv")
        print(f"wrote {write_text_variant(target)}")
        return
    rows = generate()
    with OUT.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "body", "queue", "priority"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} tickets to {OUT}")


if __name__ == "__main__":
    main()
