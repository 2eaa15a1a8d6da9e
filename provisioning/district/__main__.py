from provisioning.district.cli import main

raise SystemExit(main())
