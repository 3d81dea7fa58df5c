from fastprogan.cli import main

raise SystemExit(main())
