"""Word lists for people, places and agent notes, with the nicknames CRM staff really type."""

from __future__ import annotations

# first name -> nicknames seen in CRM records
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"),
    "William": ("Bill", "Will", "Billy"),
    "Elizabeth": ("Liz", "Beth", "Lizzie"),
    "Margaret": ("Maggie", "Peggy"),
    "James": ("Jim", "Jimmy", "Jamie"),
    "Richard": ("Rick", "Rich", "Dick"),
    "Katherine": ("Kate", "Katie", "Kathy"),
    "Michael": ("Mike", "Mick"),
    "Jennifer": ("Jen", "Jenny"),
    "Thomas": ("Tom", "Tommy"),
    "Christopher": ("Chris",),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Joseph": ("Joe",),
    "Susan": ("Sue", "Susie"),
    "Patricia": ("Pat", "Trish"),
    "Deborah": ("Debbie", "Deb"),
    "Alexander": ("Alex", "Sandy"),
    "Samantha": ("Sam",),
    "Jonathan": ("Jon",),
    "Benjamin": ("Ben",),
    "Nicholas": ("Nick",),
    "Victoria": ("Vicky", "Tori"),
    "Rebecca": ("Becky",),
    "Edward": ("Ed", "Ted", "Eddie"),
    "Charlotte": ("Lottie", "Charlie"),
    "Andrew": ("Andy", "Drew"),
    "Stephen": ("Steve",),
    "Timothy": ("Tim",),
    "Jessica": ("Jess",),
    "David": ("Dave",),
    "Peter": ("Pete",),
    "Catherine": ("Cathy", "Cath"),
    "Abigail": ("Abby",),
    "Frederick": ("Fred", "Freddie"),
    "Zachary": ("Zach",),
    "Eleanor": ("Ellie", "Nell"),
    "Harold": ("Harry",),
    "Josephine": ("Jo", "Josie"),
}
FIRST_NAMES: tuple[str, ...] = (
    *NICKNAMES,
    "Amir", "Priya", "Mohammed", "Fatima", "Sophie", "Chloe", "Lucy", "Grace", "Oliver", "Jack",
    "George", "Noah", "Leo", "Amelia", "Isla", "Ava", "Mia", "Ella", "Aisha", "Wei", "Mei", "Kofi",
    "Ama", "Sven", "Ingrid", "Rhys", "Siobhan", "Niamh", "Callum", "Hannah", "Laura", "Emma",
    "Ravi", "Anjali", "Tariq", "Yusuf", "Zara", "Imogen", "Freya", "Ethan", "Lewis", "Kieran",
)
SURNAMES: tuple[str, ...] = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson",
    "Clarke", "Patel", "Khan", "Lewis", "James", "Phillips", "Mason", "Mitchell", "Rose", "Davis",
    "Rodriguez", "Cox", "Alexander", "Morgan", "Moore", "Mills", "King", "Baker", "Harrison",
    "Morris", "Cooper", "Ward", "Martin", "Harris", "Turner", "Edwards", "Collins", "Stewart",
    "Scott", "Young", "Hughes", "Parker", "Bennett", "Bell", "Murphy", "Kelly", "Price", "Gray",
    "Cook", "Bailey", "Richardson", "Carter", "Fletcher", "Shaw", "Lloyd", "Ellis", "Holmes",
    "Russell", "Hunt", "Singh", "Ali", "Ahmed", "Begum", "Hussain", "Chen", "Wang", "Nguyen",
    "Kowalski", "Novak", "Okafor", "Mensah", "Osei", "Fernandes", "Silva", "Costa", "Rossi",
    "Muller", "Schmidt", "Larsen", "Jensen", "Murray", "Kennedy", "Reid", "Campbell", "Anderson",
    "Fraser", "Grant", "Hamilton", "Sinclair", "Donnelly", "Gallagher", "Quinn", "Byrne",
    "Gardner", "Webb", "Chapman", "Dixon", "Knight", "Palmer", "Lawrence", "Hayes", "Marshall",
    "Owen", "Griffiths", "Powell", "Lees", "Barker", "Holland", "Pearson", "Fisher", "Dawson",
    "Sutton", "Warren", "Chambers", "Newton", "Francis", "Goodwin", "Burton", "Harvey", "Lamb",
    "Nash", "Perry", "Reynolds", "Sharp", "Spencer", "Tucker", "Wheeler", "Yates", "Akhtar",
    "Bibi", "Mahmood", "Rahman", "Iqbal", "Sharma", "Gupta", "Das", "Kaur", "Lin", "Zhang", "Li",
)
# contracts.REGIONS order: north, south, east, west, central, capital
CITIES: tuple[tuple[str, ...], ...] = (
    ("Leeds", "Manchester", "Newcastle", "York"),
    ("Brighton", "Southampton", "Portsmouth", "Exeter"),
    ("Norwich", "Cambridge", "Ipswich", "Colchester"),
    ("Bristol", "Cardiff", "Plymouth", "Bath"),
    ("Birmingham", "Nottingham", "Leicester", "Coventry"),
    ("London",),
)
POSTCODE_AREAS: tuple[tuple[str, ...], ...] = (
    ("LS", "M", "NE", "YO"),
    ("BN", "SO", "PO", "EX"),
    ("NR", "CB", "IP", "CO"),
    ("BS", "CF", "PL", "BA"),
    ("B", "NG", "LE", "CV"),
    ("E", "N", "SE", "SW", "W", "NW"),
)
STREETS: tuple[str, ...] = (
    "High", "Station", "Church", "Park", "Victoria", "Green", "Manor", "Kings", "Queens", "Mill",
    "School", "Albert", "Grange", "New", "Springfield", "Windsor", "Highfield", "Alexandra",
    "York", "North", "South", "West", "East", "Richmond", "Chester", "Orchard", "Meadow", "Oak",
    "Elm", "Beech", "Cedar", "Willow", "Ash", "Hawthorn", "Rose", "Clarence", "Stanley",
    "Princes", "London", "Cambridge", "Oxford", "Bridge", "Market", "Castle", "Chapel", "Hill",
)
STREET_TYPES: tuple[tuple[str, str], ...] = (
    ("Road", "Rd"), ("Street", "St"), ("Lane", "Ln"), ("Avenue", "Ave"), ("Close", "Cl"),
    ("Way", "Way"), ("Gardens", "Gdns"), ("Drive", "Dr"), ("Crescent", "Cres"),
)
EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com", "outlook.com", "yahoo.co.uk", "icloud.com", "hotmail.co.uk", "btinternet.com",
)
# contact-centre topics per contracts.CONTACT_TYPES, with note templates and sentiment ranges
CONTACT_TOPICS: dict[str, tuple[tuple[str, str, float, float], ...]] = {
    "call": (
        ("card_declined", "{first} called, card declined at till; checked limit and unblocked", -0.4, 0.3),
        ("balance_query", "Balance query from {first}, explained pending transactions", -0.1, 0.6),
        ("product_info", "{first} asked about {product} rates and eligibility", 0.0, 0.7),
        ("payment_help", "Helped {first} set up a standing order to landlord", 0.1, 0.7),
        ("fraud_check", "Fraud check on recent card payment, customer confirmed genuine", -0.2, 0.5),
    ),
    "service_request": (
        ("address_change", "Address change requested, DOB verified, new address {postcode}", 0.0, 0.5),
        ("new_card", "Replacement card ordered for {first}, old one damaged", 0.0, 0.5),
        ("statement_copy", "Statement copies for last 3 months requested", 0.0, 0.4),
        ("limit_change", "{first} requested a credit limit review", -0.2, 0.4),
    ),
    "complaint": (
        ("fees", "{first} unhappy about overdraft fees charged this month, wants refund", -0.9, -0.4),
        ("service", "Complaint: waited 40 minutes on hold, {first} very frustrated", -0.9, -0.5),
        ("marketing", "{first} complained about too many marketing messages, asks to stop", -0.8, -0.3),
        ("failed_payment", "Direct debit bounced, {first} says salary was in, escalated", -1.0, -0.5),
    ),
}
COUNTERPARTIES: dict[str, tuple[str, ...]] = {
    "salary": ("ACME LTD PAYROLL", "NHS TRUST", "COUNCIL PAYROLL", "RETAIL GROUP PLC", "TECH LTD"),
    "rent": ("LETTINGS AGENT", "PROPERTY MGMT LTD", "LANDLORD"),
    "bill": ("BRITISH GAS", "THAMES WATER", "EE MOBILE", "SKY", "COUNCIL TAX", "OCTOPUS ENERGY"),
    "transfer_in": ("FASTER PAYMENT IN", "CLIENT INVOICE", "FAMILY TRANSFER"),
    "transfer_out": ("FASTER PAYMENT OUT", "SUPPLIER", "FRIEND", "SAVINGS POT"),
    "fee": ("UNARRANGED OD FEE", "RETURNED ITEM FEE", "ACCOUNT FEE"),
}
