//! The hand-picked people of the registry's rules fixture (`services/registry/fixtures/rules.toml`,
//! which `shlyuz up` loads), one per recruitment and housing-review rule: their IIN, full name and
//! phone, defined once for the registry's fixture module, the tests and `shlyuz demo`. The
//! registry's tests check that the fixture file says the same.

/// A person of the rules fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixturePerson {
    /// IIN.
    pub iin: &'static str,
    /// Last name, first name and patronymic, as the person registry holds them.
    pub full_name: &'static str,
    /// The phone in the mobile citizens database, if the fixture gives them one.
    pub phone: Option<&'static str>,
}

/// A recruitment candidate with nothing against them.
pub const CLEAN_CANDIDATE: FixturePerson = FixturePerson {
    iin: "980512391010",
    full_name: "Қасымов Ерлан Серікұлы",
    phone: Some("+77015550010"),
};
/// A candidate on the narcological dispensary register.
pub const NARCOLOGICAL_CANDIDATE: FixturePerson = FixturePerson {
    iin: "990203391021",
    full_name: "Омаров Дәурен Асқарұлы",
    phone: Some("+77015550021"),
};
/// A candidate with a conviction.
pub const CONVICTED_CANDIDATE: FixturePerson = FixturePerson {
    iin: "971120391035",
    full_name: "Петров Игорь Сергеевич",
    phone: Some("+77015550035"),
};
/// A person without a phone in the mobile citizens database.
pub const NO_PHONE_PERSON: FixturePerson = FixturePerson {
    iin: "010714691046",
    full_name: "Жұмабаева Әйгерім Нұрланқызы",
    phone: None,
};
/// A serviceman whom the housing review keeps on the register.
pub const SERVICEMAN_CLEAN: FixturePerson = FixturePerson {
    iin: "900315391113",
    full_name: "Тоқаев Ғалым Бауыржанұлы",
    phone: Some("+77015550113"),
};
/// The spouse of [`SERVICEMAN_CLEAN`].
pub const SERVICEMAN_CLEAN_SPOUSE: FixturePerson = FixturePerson {
    iin: "920809491129",
    full_name: "Тоқаева Ұлжан Маратқызы",
    phone: None,
};
/// The child of [`SERVICEMAN_CLEAN`].
pub const SERVICEMAN_CLEAN_CHILD: FixturePerson = FixturePerson {
    iin: "180125591130",
    full_name: "Тоқаев Әлихан Ғалымұлы",
    phone: None,
};
/// A serviceman who privatised state housing.
pub const SERVICEMAN_PRIVATISED: FixturePerson = FixturePerson {
    iin: "800404391215",
    full_name: "Сәрсенбаев Қайрат Төлегенұлы",
    phone: Some("+77015550215"),
};
/// A serviceman with an equity-construction contract.
pub const SERVICEMAN_EQUITY: FixturePerson = FixturePerson {
    iin: "880630391229",
    full_name: "Есенов Нұрлан Бекұлы",
    phone: Some("+77015550229"),
};
/// A serviceman who had service housing before.
pub const SERVICEMAN_EARLIER_HOUSING: FixturePerson = FixturePerson {
    iin: "851201391233",
    full_name: "Мұқанов Асқар Жандосұлы",
    phone: Some("+77015550233"),
};
/// A serviceman whose spouse has housing in permanent use in the locality.
pub const SERVICEMAN_SPOUSE_STATE_HOUSING: FixturePerson = FixturePerson {
    iin: "870917391247",
    full_name: "Иванов Алексей Николаевич",
    phone: Some("+77015550247"),
};
/// The spouse of [`SERVICEMAN_SPOUSE_STATE_HOUSING`].
pub const SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE: FixturePerson = FixturePerson {
    iin: "891002491255",
    full_name: "Иванова Ольга Викторовна",
    phone: None,
};
/// A serviceman whose spouse is missing.
pub const SERVICEMAN_SPOUSE_MISSING: FixturePerson = FixturePerson {
    iin: "860211391267",
    full_name: "Байжанов Бекзат Ерланұлы",
    phone: Some("+77015550267"),
};
/// The missing spouse of [`SERVICEMAN_SPOUSE_MISSING`].
pub const SERVICEMAN_SPOUSE_MISSING_SPOUSE: FixturePerson = FixturePerson {
    iin: "880505491275",
    full_name: "Байжанова Гүлнар Серікқызы",
    phone: None,
};
/// A serviceman who is not a citizen of Kazakhstan.
pub const SERVICEMAN_FOREIGN_CITIZEN: FixturePerson = FixturePerson {
    iin: "910119391289",
    full_name: "Волков Дмитрий Олегович",
    phone: Some("+77015550289"),
};
/// A serviceman who resides abroad.
pub const SERVICEMAN_RESIDENT_ABROAD: FixturePerson = FixturePerson {
    iin: "890707391299",
    full_name: "Ұзақбаев Санжар Талғатұлы",
    phone: Some("+77015550299"),
};
/// A serviceman declared legally incapable.
pub const SERVICEMAN_INCAPABLE: FixturePerson = FixturePerson {
    iin: "841111391301",
    full_name: "Өтегенов Мейрамбек Ілиясұлы",
    phone: Some("+77015550301"),
};
/// A serviceman whose child is imprisoned.
pub const SERVICEMAN_CHILD_IMPRISONED: FixturePerson = FixturePerson {
    iin: "700303391314",
    full_name: "Ахметов Дархан Мұратұлы",
    phone: Some("+77015550314"),
};
/// The imprisoned child of [`SERVICEMAN_CHILD_IMPRISONED`].
pub const SERVICEMAN_CHILD_IMPRISONED_CHILD: FixturePerson = FixturePerson {
    iin: "020606591321",
    full_name: "Ахметов Айбек Дарханұлы",
    phone: Some("+77015550321"),
};
/// A person registered as dead.
pub const DEAD_PERSON: FixturePerson = FixturePerson {
    iin: "500101391334",
    full_name: "Қуанышев Өмірзақ Үмбетәліұлы",
    phone: None,
};

/// Everyone in the rules fixture.
pub const ALL: [FixturePerson; 20] = [
    CLEAN_CANDIDATE,
    NARCOLOGICAL_CANDIDATE,
    CONVICTED_CANDIDATE,
    NO_PHONE_PERSON,
    SERVICEMAN_CLEAN,
    SERVICEMAN_CLEAN_SPOUSE,
    SERVICEMAN_CLEAN_CHILD,
    SERVICEMAN_PRIVATISED,
    SERVICEMAN_EQUITY,
    SERVICEMAN_EARLIER_HOUSING,
    SERVICEMAN_SPOUSE_STATE_HOUSING,
    SERVICEMAN_SPOUSE_STATE_HOUSING_SPOUSE,
    SERVICEMAN_SPOUSE_MISSING,
    SERVICEMAN_SPOUSE_MISSING_SPOUSE,
    SERVICEMAN_FOREIGN_CITIZEN,
    SERVICEMAN_RESIDENT_ABROAD,
    SERVICEMAN_INCAPABLE,
    SERVICEMAN_CHILD_IMPRISONED,
    SERVICEMAN_CHILD_IMPRISONED_CHILD,
    DEAD_PERSON,
];
