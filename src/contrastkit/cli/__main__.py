from contrastkit.cli.main import main

raise SystemExit(main())
