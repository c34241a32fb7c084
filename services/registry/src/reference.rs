//! Reference data for the synthetic population: regions and their centres with KATO codes, and
//! Kazakh and Russian names (with the Kazakh letters Ә Ғ Қ Ң Ө Ұ Ү Һ І).

/// A region with its administrative centre.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// KATO code of the region.
    pub kato: &'static str,
    /// Name in Kazakh.
    pub name: &'static str,
    /// KATO code of the centre.
    pub centre_kato: &'static str,
    /// Name of the centre in Kazakh.
    pub centre_name: &'static str,
    /// Relative population weight (thousands of residents, rounded).
    pub weight: u32,
}

/// Regions and cities of republican significance.
pub const REGIONS: [Region; 20] = [
    Region {
        kato: "710000000",
        name: "Астана қаласы",
        centre_kato: "711110000",
        centre_name: "Астана",
        weight: 1350,
    },
    Region {
        kato: "750000000",
        name: "Алматы қаласы",
        centre_kato: "751110000",
        centre_name: "Алматы",
        weight: 2230,
    },
    Region {
        kato: "790000000",
        name: "Шымкент қаласы",
        centre_kato: "791110000",
        centre_name: "Шымкент",
        weight: 1200,
    },
    Region {
        kato: "100000000",
        name: "Абай облысы",
        centre_kato: "101010000",
        centre_name: "Семей",
        weight: 610,
    },
    Region {
        kato: "110000000",
        name: "Ақмола облысы",
        centre_kato: "111010000",
        centre_name: "Көкшетау",
        weight: 790,
    },
    Region {
        kato: "150000000",
        name: "Ақтөбе облысы",
        centre_kato: "151010000",
        centre_name: "Ақтөбе",
        weight: 930,
    },
    Region {
        kato: "190000000",
        name: "Алматы облысы",
        centre_kato: "191010000",
        centre_name: "Қонаев",
        weight: 1500,
    },
    Region {
        kato: "230000000",
        name: "Атырау облысы",
        centre_kato: "231010000",
        centre_name: "Атырау",
        weight: 700,
    },
    Region {
        kato: "270000000",
        name: "Батыс Қазақстан облысы",
        centre_kato: "271010000",
        centre_name: "Орал",
        weight: 690,
    },
    Region {
        kato: "310000000",
        name: "Жамбыл облысы",
        centre_kato: "311010000",
        centre_name: "Тараз",
        weight: 1220,
    },
    Region {
        kato: "330000000",
        name: "Жетісу облысы",
        centre_kato: "331010000",
        centre_name: "Талдықорған",
        weight: 700,
    },
    Region {
        kato: "350000000",
        name: "Қарағанды облысы",
        centre_kato: "351010000",
        centre_name: "Қарағанды",
        weight: 1130,
    },
    Region {
        kato: "390000000",
        name: "Қостанай облысы",
        centre_kato: "391010000",
        centre_name: "Қостанай",
        weight: 830,
    },
    Region {
        kato: "430000000",
        name: "Қызылорда облысы",
        centre_kato: "431010000",
        centre_name: "Қызылорда",
        weight: 830,
    },
    Region {
        kato: "470000000",
        name: "Маңғыстау облысы",
        centre_kato: "471010000",
        centre_name: "Ақтау",
        weight: 770,
    },
    Region {
        kato: "550000000",
        name: "Павлодар облысы",
        centre_kato: "551010000",
        centre_name: "Павлодар",
        weight: 750,
    },
    Region {
        kato: "590000000",
        name: "Солтүстік Қазақстан облысы",
        centre_kato: "591010000",
        centre_name: "Петропавл",
        weight: 530,
    },
    Region {
        kato: "610000000",
        name: "Түркістан облысы",
        centre_kato: "611010000",
        centre_name: "Түркістан",
        weight: 2110,
    },
    Region {
        kato: "630000000",
        name: "Шығыс Қазақстан облысы",
        centre_kato: "631010000",
        centre_name: "Өскемен",
        weight: 710,
    },
    Region {
        kato: "620000000",
        name: "Ұлытау облысы",
        centre_kato: "621010000",
        centre_name: "Жезқазған",
        weight: 220,
    },
];

/// Kazakh male given names.
pub const KAZAKH_MALE_NAMES: [&str; 26] = [
    "Әлихан",
    "Ерлан",
    "Нұрлан",
    "Қайрат",
    "Дәурен",
    "Ғалым",
    "Бауыржан",
    "Асқар",
    "Серік",
    "Жандос",
    "Айбек",
    "Мұрат",
    "Ұлан",
    "Нұрсұлтан",
    "Ерғали",
    "Тілеу",
    "Бекзат",
    "Әділет",
    "Санжар",
    "Дархан",
    "Мейрамбек",
    "Талғат",
    "Ілияс",
    "Жаһангер",
    "Өмірзақ",
    "Үмбетәлі",
];

/// Kazakh female given names.
pub const KAZAKH_FEMALE_NAMES: [&str; 20] = [
    "Әйгерім",
    "Гүлнар",
    "Ақмарал",
    "Айгүл",
    "Динара",
    "Жұлдыз",
    "Назерке",
    "Ұлжан",
    "Мөлдір",
    "Сәуле",
    "Гүлжан",
    "Қарлығаш",
    "Айжан",
    "Аружан",
    "Іңкәр",
    "Томирис",
    "Балнұр",
    "Жансая",
    "Мадина",
    "Шаһизада",
];

/// Kazakh surname stems; the male form adds nothing, the female form adds `а`.
pub const KAZAKH_SURNAMES: [&str; 22] = [
    "Әбдірахманов",
    "Қасымов",
    "Нұрғалиев",
    "Сәрсенбаев",
    "Омаров",
    "Жұмабаев",
    "Есенов",
    "Бекмұхамбетов",
    "Тоқаев",
    "Ұзақбаев",
    "Мұқанов",
    "Серікбаев",
    "Байжанов",
    "Өтегенов",
    "Қуанышев",
    "Ахметов",
    "Иманғалиев",
    "Тілеубердиев",
    "Шәріпов",
    "Әлиев",
    "Ғабдуллин",
    "Жаңабаев",
];

/// Russian male given names with the patronymic they give (male, female form).
pub const RUSSIAN_MALE_NAMES: [(&str, &str, &str); 12] = [
    ("Александр", "Александрович", "Александровна"),
    ("Сергей", "Сергеевич", "Сергеевна"),
    ("Дмитрий", "Дмитриевич", "Дмитриевна"),
    ("Андрей", "Андреевич", "Андреевна"),
    ("Алексей", "Алексеевич", "Алексеевна"),
    ("Владимир", "Владимирович", "Владимировна"),
    ("Игорь", "Игоревич", "Игоревна"),
    ("Николай", "Николаевич", "Николаевна"),
    ("Евгений", "Евгеньевич", "Евгеньевна"),
    ("Виктор", "Викторович", "Викторовна"),
    ("Юрий", "Юрьевич", "Юрьевна"),
    ("Олег", "Олегович", "Олеговна"),
];

/// Russian female given names.
pub const RUSSIAN_FEMALE_NAMES: [&str; 12] = [
    "Елена",
    "Ольга",
    "Наталья",
    "Татьяна",
    "Ирина",
    "Светлана",
    "Анна",
    "Мария",
    "Екатерина",
    "Юлия",
    "Людмила",
    "Валентина",
];

/// Russian surname stems; the female form adds `а`.
pub const RUSSIAN_SURNAMES: [&str; 14] = [
    "Иванов",
    "Петров",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
    "Лебедев",
    "Козлов",
];

/// Streets used in addresses.
pub const STREETS: [&str; 14] = [
    "Абай даңғылы",
    "Қабанбай батыр көшесі",
    "Төле би көшесі",
    "Әль-Фараби даңғылы",
    "Сәтбаев көшесі",
    "Жібек жолы көшесі",
    "Республика даңғылы",
    "Құнаев көшесі",
    "Мәңгілік Ел даңғылы",
    "Бөгенбай батыр көшесі",
    "Желтоқсан көшесі",
    "Пушкин көшесі",
    "Гоголь көшесі",
    "Ұлы Дала даңғылы",
];

/// Housing developers for equity contracts.
pub const DEVELOPERS: [&str; 6] = [
    "BI Group ЖШС",
    "Базис-А ЖШС",
    "Sensata Group ЖШС",
    "Qazaq Stroy ЖШС",
    "Mega Stroy ЖШС",
    "Үй Құрылыс ЖШС",
];

/// Mobile operator prefixes (code, operator).
pub const MOBILE_PREFIXES: [(&str, &str); 10] = [
    ("701", "Kcell"),
    ("702", "Kcell"),
    ("775", "Kcell"),
    ("778", "Kcell"),
    ("705", "Beeline"),
    ("771", "Beeline"),
    ("777", "Beeline"),
    ("707", "Tele2"),
    ("747", "Tele2"),
    ("700", "Altel"),
];

/// Countries of residence abroad and foreign citizenships.
pub const FOREIGN_COUNTRIES: [&str; 6] = ["RU", "UZ", "KG", "CN", "DE", "TR"];

/// Criminal Code articles (code, description used as the sentence basis).
pub const ARTICLES: [&str; 8] = [
    "188 ч.2", "190 ч.1", "296 ч.1", "293 ч.2", "106 ч.1", "345 ч.2", "297 ч.1", "200 ч.1",
];

/// Penitentiary institutions.
pub const INSTITUTIONS: [&str; 5] = [
    "ЕЦ-166/4 мекемесі",
    "АК-159/1 мекемесі",
    "ЛА-155/12 мекемесі",
    "УК-161/3 мекемесі",
    "ОВ-156/11 мекемесі",
];

/// ICD-10 diagnosis codes per dispensary (enum number order: TB, skin-venereal, psych, narco).
pub const DIAGNOSES: [&[&str]; 4] = [
    &["A15.0", "A16.2", "B90.9"],
    &["A51.3", "A54.0", "L40.0"],
    &["F20.0", "F31.1", "F70.0"],
    &["F10.2", "F11.2", "F12.1"],
];
